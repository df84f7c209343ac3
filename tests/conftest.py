"""Shared fixtures: one set of tiny models per test run, built locally and loaded back with from_pretrained."""

from __future__ import annotations

import os

import pytest

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from panda_chat.tiny_models import TinyModelSet, build_tiny_model_set  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelSet:
    """Tiny base model, same-tokenizer reward model and a different-tokenizer reward model, saved to a temp folder."""
    return build_tiny_model_set(tmp_path_factory.mktemp("tiny_models"))
