"""File formats that cross the store's boundary: chat history (JSONL) in, and a user's export (JSON) out and in.

History JSONL: one JSON object per line, ``{"role": "user", "text": "...", "created_at": "2024-05-01T10:00:00Z",
"conversation": "c1"}``; ``content`` is accepted for ``text`` and ``timestamp`` for ``created_at`` (ISO 8601 or epoch
seconds); ``created_at`` and ``conversation`` are optional; blank lines are skipped. Lines sharing a ``conversation``
key become one conversation; lines without one share a single new conversation.

Export JSON (``ProfileExport``): ``{"format": "panda-chat/profile", "version": 1, ...}``, everything the store holds
about one user except what it derives (embeddings, the index), which an import recomputes. Messages are numbered
by ``ref`` inside the file, so an export never depends on database ids and export -> import -> export is identical.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from profiles.errors import ImportFormatError, InvalidInputError
from profiles.ids import InvalidUserIdError, validate_user_id
from profiles.validation import FeedbackInput, Rating, check_text_size, check_unique, first_error

EXPORT_FORMAT: Final = "panda-chat/profile"
EXPORT_VERSION: Final = 1

Role = Literal["user", "assistant", "system"]


def _from_base64(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
    return value


# Bytes in Python, standard base64 text in JSON.
Base64Bytes = Annotated[
    bytes, BeforeValidator(_from_base64), PlainSerializer(lambda data: base64.b64encode(data).decode("ascii"))
]


def as_utc(value: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("text is empty")
    return value


class HistoryLine(BaseModel):
    """One line of a history JSONL file."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Role
    text: str = Field(validation_alias=AliasChoices("text", "content"))
    created_at: datetime | None = Field(default=None, validation_alias=AliasChoices("created_at", "timestamp"))
    conversation: str | None = None

    _text_not_blank = field_validator("text")(_non_blank)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)


def numbered_lines(lines: Iterable[str | bytes], *, source: str) -> Iterator[tuple[int, str]]:
    """``(1-based number, text)`` of each line; bytes are decoded as UTF-8, and a line that is not valid UTF-8
    raises ``ImportFormatError`` naming the file, the line and the byte (a bare codec error names neither)."""
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ImportFormatError(
                    f"not valid UTF-8 (byte 0x{line[error.start]:02x} at column {error.start + 1}); "
                    "save the file as UTF-8",
                    source=source,
                    line=number,
                ) from None
        yield number, line


def parse_history(
    lines: Iterable[str | bytes], *, source: str = "history", max_chars: int | None = None
) -> list[HistoryLine]:
    """Parse every line (text, or UTF-8 bytes) before anything is stored; the first bad line raises
    ``ImportFormatError`` with its number. ``max_chars`` bounds each message's text (the store's limit)."""
    records = []
    for number, line in numbered_lines(lines, source=source):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise ImportFormatError(f"not valid JSON ({error.msg})", source=source, line=number) from None
        if not isinstance(data, dict):
            raise ImportFormatError("expected a JSON object with role and text", source=source, line=number)
        try:
            record = HistoryLine.model_validate(data)
            if max_chars is not None:
                check_text_size(record.text, max_chars, "text")
        except ValidationError as error:
            raise ImportFormatError(first_error(error), source=source, line=number) from None
        except InvalidInputError as error:
            raise ImportFormatError(str(error), source=source, line=number) from None
        records.append(record)
    return records


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _aware_datetimes(cls, value: Any) -> Any:
        return as_utc(value) if isinstance(value, datetime) else value


class ExportedMessage(_Record):
    ref: int = Field(ge=1)
    role: Role
    text: str
    created_at: datetime

    _text_not_blank = field_validator("text")(_non_blank)


class ExportedConversation(_Record):
    title: str | None = None
    created_at: datetime
    messages: list[ExportedMessage] = Field(default_factory=list)


class ExportedFeedback(_Record):
    """Feedback as exported; the same rules as ``ProfileStore.add_feedback`` (``profiles.validation``)."""

    prompt: str
    response: str | None = None
    rating: Rating | None = None
    chosen: str | None = None
    rejected: str | None = None
    message_ref: int | None = None
    created_at: datetime

    @model_validator(mode="after")
    def _rating_or_pair(self) -> ExportedFeedback:
        FeedbackInput(
            prompt=self.prompt, response=self.response, rating=self.rating, chosen=self.chosen, rejected=self.rejected
        )
        if self.rating is not None and self.response is None and self.message_ref is None:
            raise ValueError("a rating needs the rated response (or the message_ref of a message in the file)")
        return self


class ExportedSetting(_Record):
    dimension: str
    pole: str
    updated_at: datetime


class ExportedRewardHead(_Record):
    name: str
    data: Base64Bytes
    meta: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class ProfileExport(_Record):
    """Everything about one user, versioned. ``import`` refuses other formats and newer versions."""

    format: Literal["panda-chat/profile"] = EXPORT_FORMAT
    version: Literal[1] = EXPORT_VERSION
    user_id: str
    created_at: datetime
    conversations: list[ExportedConversation] = Field(default_factory=list)
    feedback: list[ExportedFeedback] = Field(default_factory=list)
    preferences: list[ExportedSetting] = Field(default_factory=list)
    reward_heads: list[ExportedRewardHead] = Field(default_factory=list)

    @field_validator("user_id")
    @classmethod
    def _valid_user_id(cls, value: str) -> str:
        try:
            return validate_user_id(value, where="the user id")
        except InvalidUserIdError as error:
            raise ValueError(str(error)) from None

    @model_validator(mode="after")
    def _no_duplicates(self) -> ProfileExport:
        check_unique((setting.dimension for setting in self.preferences), "preference dimension")
        check_unique((head.name for head in self.reward_heads), "reward head")
        return self

    @model_validator(mode="after")
    def _consistent_refs(self) -> ProfileExport:
        refs = [message.ref for conversation in self.conversations for message in conversation.messages]
        if len(set(refs)) != len(refs):
            raise ValueError("message refs must be unique")
        known = set(refs)
        for item in self.feedback:
            if item.message_ref is not None and item.message_ref not in known:
                raise ValueError(f"feedback refers to message ref {item.message_ref}, which the file does not hold")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def parse_export(text: str | bytes, *, source: str = "export") -> ProfileExport:
    """Read an export file, with one-line errors for other formats, newer versions and invalid content."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ImportFormatError(f"not valid JSON ({error})", source=source) from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ImportFormatError(f"not a panda-chat profile export (expected format {EXPORT_FORMAT!r})", source=source)
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ImportFormatError("the export has no integer version", source=source)
    if version > EXPORT_VERSION:
        raise ImportFormatError(
            f"export version {version} is newer than this panda-chat reads ({EXPORT_VERSION}); upgrade panda-chat",
            source=source,
        )
    try:
        return ProfileExport.model_validate(data)
    except ValidationError as error:
        raise ImportFormatError(first_error(error), source=source, line=_line_of(text, error)) from None


def _line_of(text: str | bytes, error: ValidationError) -> int | None:
    """The line of the export file where the first problem's top-level key is written (exports are indented JSON,
    one key per line); None when it cannot be told."""
    loc = error.errors()[0]["loc"]
    if not loc or not isinstance(loc[0], str):
        return None
    data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    needle = json.dumps(loc[0]) + ":"
    for number, line in enumerate(data.splitlines(), start=1):
        if line.lstrip().startswith(needle):
            return number
    return None
