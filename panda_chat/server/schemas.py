"""The OpenAI chat-completions request and response shapes the server speaks (and its few extension fields).

Only what the server acts on is modelled; unknown request fields are ignored, as OpenAI-compatible servers do, so
every SDK's extra defaults are accepted. Extension fields (``conversation_id``, ``strength``, ``lam``, ``top_k``)
come in the body (the ``openai`` client's ``extra_body``); the personalisation used comes back in the response.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Json

from profiles.validation import FeedbackInput

StoreId = Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)]
"""A profile-store row id (a conversation): the store's ``Integer`` keys are 32-bit on PostgreSQL, so a larger number
names no row and is refused here rather than overflowing the database driver (strict: ``true`` is not conversation
1)."""


class FunctionCall(BaseModel):
    name: str
    arguments: Json[dict[str, Any]] = Field(default_factory=dict)  # OpenAI sends a JSON object as a string


class ToolCall(BaseModel):
    """A call in an assistant message of the history."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(BaseModel):
    """A tool the request offers (OpenAI's ``{"type": "function", "function": {...}}``)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    function: FunctionSpec


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")  # "schema" is a BaseModel attribute
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: text, any JSON object, or JSON for a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    user: str | None = None  # the profile user whose preferences steer the answer
    stream: bool | None = False  # OpenAI's schema makes n, stream and the sampling fields nullable: null is the default
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # a 64-bit generator seed
    stop: str | list[str] | None = None
    n: int | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: Any = None
    response_format: ResponseFormat | None = None
    # extensions
    conversation_id: StoreId | str | None = None
    thread_id: StoreId | str | None = None  # alias of conversation_id (LangGraph's word for it)
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
