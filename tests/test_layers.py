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
