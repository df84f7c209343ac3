"""Shared fixtures: one set of tiny models per test run, built locally and loaded back with from_pretrained."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from panda_chat.tiny_models import TinyModelSet, build_tiny_model_set


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelSet:
    """Tiny base model, same-tokenizer reward model and a different-tokenizer reward model, saved to a temp folder."""
    return build_tiny_model_set(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def template_free_model(tiny_models: TinyModelSet, tmp_path) -> Path:
    """A copy of the tiny base model whose tokenizer has no chat template (a base model, as many on a hub are)."""
    folder = Path(shutil.copytree(tiny_models.base, tmp_path / "no-template"))
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config), encoding="utf-8")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test models are tiny: one thread is faster than torch's pool, far faster on a busy 2-core machine.

    Set before every test, because CLI commands with ``--threads`` change the process-wide setting.
    """
    torch.set_num_threads(1)
    return
