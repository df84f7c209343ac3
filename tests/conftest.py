"""Shared fixtures: one set of tiny models per test run, built locally and loaded back with from_pretrained."""

from __future__ import annotations

import os

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


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The test models are tiny: one thread is faster than torch's pool, far faster on a busy 2-core machine.

    Set before every test, because CLI commands with ``--threads`` change the process-wide setting.
    """
    torch.set_num_threads(1)
    return
