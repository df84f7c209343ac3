"""Layers import downward only (DESIGN.md section 5): checked in fresh interpreters, where nothing is preloaded."""

import subprocess
import sys

import pytest


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


# The README's layout table, top to bottom: a module may import only from its own package or one further down.
LAYERS = [
    "cli", "langgraph", "chat_model", "demo", "evaluation", "personalize", "decoding", "rewards", "lam",
    "metrics", "registry", "tree_attention", "weights_file", "tiny_models",
]


def _panda_chat_imports(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "panda_chat" and len(parts) > 1:
                yield parts[1]


def test_every_panda_chat_module_imports_only_downward():
    from pathlib import Path

    import panda_chat

    root = Path(panda_chat.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        own = path.relative_to(root).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in LAYERS, f"{own} is missing from the layer list (and the README's layout table)"
        for target in _panda_chat_imports(path):
            if target != own and LAYERS.index(target) < LAYERS.index(own):
                upward.append(f"{path.relative_to(root)} imports panda_chat.{target}")
    assert upward == []
