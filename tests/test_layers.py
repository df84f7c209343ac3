"""Layers import downward only (docs/ARCHITECTURE.md).

The rule itself is the import-linter contract in ``pyproject.toml`` (``[tool.importlinter]``), checked here on the
real import graph. The fresh-interpreter tests check what actually gets loaded at run time, where nothing is preloaded.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_decoding_imports_neither_profiles_nor_the_cli_nor_the_chat_model():
    loaded = _modules_after_import("panda_chat.decoding")
    forbidden = {"profiles", "panda_chat.cli", "panda_chat.chat_model", "panda_chat.personalize", "sqlalchemy"}
    assert not forbidden & loaded


@pytest.mark.parametrize("module", ["profiles", "profiles.store", "profiles.inference"])
def test_profiles_never_imports_panda_chat(module):
    assert not any(name == "panda_chat" or name.startswith("panda_chat.") for name in _modules_after_import(module))


def test_lambda_and_rewards_interfaces_do_not_import_the_decoder():
    loaded = _modules_after_import("panda_chat.lam, panda_chat.rewards.base, panda_chat.rewards.heads")
    assert "panda_chat.decoding" not in loaded


def test_the_import_contracts_hold():
    """import-linter's contracts (layers; profiles never imports panda_chat) on the repository's own code."""
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_panda_chat_module_sits_in_a_layer():
    """A new top-level module must be placed in the layers contract (and the README's layout table), or it escapes
    the check."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]
    named = {module for layer in layers for module in layer.replace(":", "|").split("|")}
    package = ROOT / "panda_chat"
    modules = {
        f"panda_chat.{path.name.removesuffix('.py')}"
        for path in package.iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py") or (path / "__init__.py").exists()
    }
    assert modules - {name.strip() for name in named} == set()
