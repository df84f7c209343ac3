"""Help and argument errors stay cheap: checked in fresh interpreters, by which modules got imported (not by timing).

``panda-chat --help`` and every command's ``--help`` must not import torch, transformers, faiss, SQLAlchemy, Alembic,
LangChain, numpy, pydantic, uvicorn, the chat model, the server or the rewards package; ``profiles.ids`` and
``profiles.errors`` must not import the store.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = [
    "torch",
    "transformers",
    "faiss",
    "sqlalchemy",
    "alembic",
    "langchain_core",
    "sentence_transformers",
    "numpy",
    "pydantic",
    "uvicorn",
    "panda_chat.chat_model",
    "panda_chat.server",
    "panda_chat.rewards",
    "panda_chat.decoding",
    "profiles.store",
]

# Runs in a fresh interpreter: print every command path's --help (walking the whole command tree, groups included),
# then report which heavy modules each one left behind in sys.modules.
_WALK_HELP = """
import json, sys
import click
from panda_chat.cli import main
heavy = json.loads(sys.argv[1])

def run(path):
    try:
        main([*path, "--help"], prog_name="panda-chat")
    except SystemExit:
        pass
    return [name for name in heavy if name in sys.modules]

found = {"": run([])}
stack = [[]]
while stack:
    path = stack.pop()
    context = click.Context(main)
    command = main
    for name in path:
        command = command.get_command(context, name)
    if isinstance(command, click.Group):
        for name in command.list_commands(context):
            found[" ".join([*path, name])] = run([*path, name])
            stack.append([*path, name])
print("RESULT " + json.dumps(found))
"""


def _fresh(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, timeout=120)


def test_importing_the_cli_imports_nothing_heavy():
    code = "import json, sys, panda_chat.cli; "
    code += "print(json.dumps([m for m in json.loads(sys.argv[1]) if m in sys.modules]))"
    assert json.loads(_fresh(code, json.dumps(HEAVY)).stdout) == []


def test_every_help_page_imports_nothing_heavy():
    output = _fresh(_WALK_HELP, json.dumps(HEAVY)).stdout
    found = json.loads(output.split("RESULT ", 1)[1])
    assert {"", "profile", "profile list", "reward train", "lambda fit", "chat", "generate"} <= set(found)
    assert {path: modules for path, modules in found.items() if modules} == {}


def test_profiles_ids_and_errors_do_not_import_the_store():
    code = "import json, sys, profiles.ids, profiles.errors; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(_fresh(code).stdout))
    assert not {"profiles.store", "sqlalchemy", "faiss", "alembic"} & loaded


def test_every_lazy_profiles_name_is_the_object_its_module_defines():
    import importlib

    import profiles

    for name, module in profiles._EXPORTS.items():
        assert getattr(profiles, name) is getattr(importlib.import_module(module), name)


def test_what_type_checkers_see_in_profiles_matches_what_it_exports():
    """The ``if TYPE_CHECKING:`` imports of ``profiles/__init__.py`` name the same things from the same modules."""
    import ast
    from pathlib import Path

    import profiles

    tree = ast.parse(Path(profiles.__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert seen == profiles._EXPORTS


def test_python_dash_m_runs_the_same_command_line():
    """``python -m panda_chat.cli`` (a checkout without the installed script) lists every registered command."""
    from panda_chat.cli import COMMANDS

    shown = subprocess.run(
        [sys.executable, "-m", "panda_chat.cli", "--help"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert shown.startswith("Usage: panda-chat ")
    assert all(f"  {name} " in shown for name in COMMANDS)
