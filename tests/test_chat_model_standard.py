"""LangChain's standard conformance suites for chat models, on the tiny test model.

The flags say what ChatPanda does and does not do: tool calling with tool choice (calls decoded under the tool's JSON
schema), structured output and JSON mode (schema-constrained JSON), usage metadata, per-call model override; text
only (no images, audio, PDFs: those tests skip).
"""

from __future__ import annotations

from typing import ClassVar

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from transformers import AutoTokenizer

from panda_chat.chat_model import ChatPanda
from panda_chat.tiny_models import build_causal_lm
from profiles import ProfileStore


@pytest.fixture(scope="module")
def standard_setup(tiny_models, tmp_path_factory):
    """The tiny model, a second one (for the model-override tests) and a profile store with a fast embedder."""
    root = tmp_path_factory.mktemp("standard")
    other = build_causal_lm(root / "other-base", AutoTokenizer.from_pretrained(tiny_models.base), seed=7)
    store = ProfileStore(root / "profiles.db", embedder="hashing")
    yield {"model": str(tiny_models.base), "other": str(other), "store": store}
    store.close()


class _Params:
    setup: ClassVar[dict] = {}

    @pytest.fixture(autouse=True)
    def _use_tiny_models(self, standard_setup):
        type(self).setup = standard_setup

    @property
    def chat_model_class(self) -> type[ChatPanda]:
        return ChatPanda

    @property
    def chat_model_params(self) -> dict:
        setup = self.setup
        # call_bias: a random tiny model never prefers a call by itself, and the agent-loop test expects one under
        # tool_choice="auto"; max_tool_rounds=1 then makes it answer once the tool's result is in.
        return {
            "model": setup["model"],
            "store": setup["store"],
            "device": "cpu",
            "user_id": "standard-suite",
            "call_bias": 100.0,
            "max_tool_rounds": 1,
        }

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True  # the suite then forces calls with tool_choice="any": a random tiny model would rarely choose to

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return self.setup["other"]


class TestChatPandaUnit(_Params, ChatModelUnitTests):
    pass


# The suite mixes sync and async tests and may not be overridden; this project does not run pytest-asyncio in auto
# mode, so the class is marked for asyncio and the resulting "sync test marked asyncio" notices are silenced.
@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:The test <Function .* is marked with '@pytest.mark.asyncio' but it is not an async")
class TestChatPandaIntegration(_Params, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        return {**super().chat_model_params, "max_tokens": 6}  # short answers keep the suite fast
