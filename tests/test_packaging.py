"""What the wheel installs: the runtime package and the demo models, not the code that only rebuilds them.

The package list is computed the way setuptools computes it for the wheel (``find_packages`` with the
``[tool.setuptools.packages.find]`` settings of ``pyproject.toml``), which takes milliseconds where building a wheel
takes many seconds. That the runtime never imports the excluded recipe is an import-linter contract, checked with the
others in ``tests/test_layers.py``; here we check the contract names every runtime module.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "panda_chat.demo.recipe"


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _wheel_packages() -> set[str]:
    find = _config()["tool"]["setuptools"]["packages"]["find"]
    return set(find_packages(str(ROOT), include=find["include"], exclude=find["exclude"]))


def test_the_wheel_ships_the_runtime_and_the_demo_models_but_not_the_recipe():
    packages = _wheel_packages()
    assert {"panda_chat", "panda_chat.cli", "panda_chat.chat_model", "panda_chat.demo", "panda_chat.demo.models"} <= (
        packages
    )
    assert not {p for p in packages if p == RECIPE or p.startswith(RECIPE + ".")}
    assert (ROOT / "panda_chat" / "demo" / "recipe" / "__init__.py").is_file()  # the recipe is a package (excludable)


def test_the_recipe_contract_covers_every_runtime_module():
    """Every panda_chat module the wheel ships (top-level modules and packages, and the demo's own modules) is a
    source of the "never imports the recipe" contract, so a new module cannot import the recipe unnoticed."""
    contract = next(c for c in _config()["tool"]["importlinter"]["contracts"] if c.get("forbidden_modules") == [RECIPE])
    sources = set(contract["source_modules"])
    shipped = set()
    for folder, prefix in ((ROOT / "panda_chat", "panda_chat"), (ROOT / "panda_chat" / "demo", "panda_chat.demo")):
        for path in folder.iterdir():
            if (path.suffix == ".py" and path.name != "__init__.py") or (path / "__init__.py").is_file():
                shipped.add(f"{prefix}.{path.name.removesuffix('.py')}")
    assert shipped - {"panda_chat.demo", RECIPE} - sources == set()


def test_the_recipe_still_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", RECIPE, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--out" in result.stdout and "--reuse-base" in result.stdout
