"""The one set of rules for data entering the store, whether it comes from the CLI, the Python API or an import file.

A rating of 50 must be refused the same way when typed on a command line, passed to ``ProfileStore.add_feedback``
or found in a tampered export; a setting given twice must be refused everywhere rather than stored twice (or crash
on a unique constraint). So the rules live here, as pydantic types and models, and every entry point validates
through them: ``FeedbackInput`` (ratings and pairs), ``check_unique`` (duplicates), ``check_not_blank`` (empty
texts) and ``check_text_size`` (the store's message-size bound). User ids have their own home, ``profiles.ids``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from profiles.errors import InvalidInputError

MIN_RATING = -1.0
MAX_RATING = 1.0
DEFAULT_MAX_MESSAGE_CHARS = 50_000
"""The store's default bound on one message (and one feedback text): a long pasted document fits, while a 1 MB
message, which would make every later chat turn re-send a megabyte, is refused with a clear error."""

Rating = Annotated[float, Field(ge=MIN_RATING, le=MAX_RATING, allow_inf_nan=False)]
"""A rating from -1 (bad) to 1 (good)."""


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


class FeedbackInput(BaseModel):
    """One piece of feedback: a ``rating`` of a response (the response itself, or a reference to a stored message,
    is resolved by the store), or a ``chosen`` response preferred to a ``rejected`` one."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    response: str | None = None
    rating: Rating | None = None
    chosen: str | None = None
    rejected: str | None = None

    @property
    def is_pair(self) -> bool:
        return self.chosen is not None or self.rejected is not None

    @model_validator(mode="after")
    def _rating_or_pair(self) -> FeedbackInput:
        if _blank(self.prompt):
            raise ValueError("prompt is empty; give the prompt the response answers")
        if self.is_pair == (self.rating is not None):
            raise ValueError("give either a rating (with a response) or a chosen and a rejected response")
        if self.is_pair:
            if _blank(self.chosen) or _blank(self.rejected):
                raise ValueError("a feedback pair needs a non-empty chosen and a non-empty rejected response")
            if self.response is not None:
                raise ValueError("a chosen/rejected pair takes no separate response")
        elif self.response is not None and _blank(self.response):
            raise ValueError("response is empty; give the text that was rated")
        return self


def feedback_input(**fields: object) -> FeedbackInput:
    """``FeedbackInput(**fields)``, with the first validation problem as a one-line ``InvalidInputError``."""
    from pydantic import ValidationError

    try:
        return FeedbackInput.model_validate(fields)
    except ValidationError as error:
        raise InvalidInputError(first_error(error)) from None


def first_error(error: object) -> str:
    """The first problem of a pydantic ``ValidationError`` as ``where: what`` (one line)."""
    first = error.errors()[0]  # type: ignore[attr-defined]
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first.get("type") in {"less_than_equal", "greater_than_equal", "finite_number"} and "rating" in where:
        return (
            f"{where} {first.get('input')} is out of range; use a number from {MIN_RATING:g} (bad) to "
            f"{MAX_RATING:g} (good)"
        )
    return f"{where}: {message}" if where else message


def check_unique(values: Iterable[str], what: str) -> None:
    """Refuse a value given twice (``what`` names it in the message, e.g. "preference dimension")."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} is given twice; keep one")
        seen.add(value)


def check_not_blank(text: str, what: str = "text") -> str:
    """Refuse a text that is empty or only whitespace (``what`` names it in the message)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f"{what} is empty; give some text")
    return text


def check_text_size(text: str, limit: int, what: str = "message") -> str:
    """Refuse a text longer than ``limit`` characters (the store's ``max_message_chars``)."""
    if len(text) > limit:
        raise InvalidInputError(
            f"{what} is {len(text):,} characters long; this store keeps at most {limit:,} per message "
            "(shorten it, or open the store with a larger max_message_chars)"
        )
    return text
