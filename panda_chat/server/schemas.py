"""The OpenAI chat-completions request and response shapes the server speaks (and its few extension fields).

Only what the server acts on is modelled; unknown request fields are ignored, as OpenAI-compatible servers do, so
every SDK's extra defaults are accepted. Extension fields (``conversation_id``, ``strength``, ``lam``, ``top_k``)
come in the body (the ``openai`` client's ``extra_body``); the personalisation used comes back in the response.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from profiles.validation import FeedbackInput


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    user: str | None = None  # the profile user whose preferences steer the answer
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    # extensions
    conversation_id: int | str | None = None
    thread_id: int | str | None = None  # alias of conversation_id (LangGraph's word for it)
    strength: float | None = Field(default=None, ge=0.0)
    lam: float | None = Field(default=None, ge=0.0)
    top_k: int | None = Field(default=None, ge=1)


class PreferenceUpdate(BaseModel):
    pole: str


class FeedbackRequest(FeedbackInput):
    """Feedback over HTTP: the store's one feedback model (``profiles.validation``), so a rating or a pair is
    refused here exactly as by the CLI, the Python API and import files."""


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
