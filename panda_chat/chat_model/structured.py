"""Schema-constrained JSON: the model writes the whole answer, and at every step only tokens that keep it valid
for the JSON schema may become PANDA's candidates.

The constraint is a token filter on the decoder (``PandaDecoder.generate(token_filter=...)``), applied before the
top-k: PANDA re-scores the allowed candidates with the user's rewards as usual, so the values stay steered, and the
JSON always follows the schema (bounds, lengths, patterns, enums, required keys, branches), whatever the model.
The grammar is compiled and walked by llguidance (a token-level JSON-schema/regex engine in Rust: a mask for the whole
vocabulary costs tens of microseconds, so it fits inside the decoding loop).

Two rules on top of the schema, because small models need them:

- a string never starts with whitespace (BPE vocabularies favour " word" tokens right after a quote);
- closing pressure: once a string has had ``max_tokens`` tokens, or the answer has made ``max_tokens`` free choices
  (steps where the grammar allowed more than one token), the allowed tokens that close
  something (a quote, a brace, a bracket, the end; else a comma, which ends a number) are preferred,
  so a model that would ramble still finishes a
  valid instance within ``hard_limit`` tokens.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import llguidance
import llguidance.hf
import llguidance.torch
import torch

COMPACT = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
_CLOSERS = frozenset('"}]')  # a token made only of these closes a string, an object or an array


class SchemaError(ValueError):
    """A response format or tool schema that structured output cannot follow."""


def json_schema_of(response_format: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON schema in a response format: a plain schema, OpenAI's ``{"type": "json_schema", "json_schema":
    {"schema": ...}}`` envelope, or ``{"type": "json_object"}`` / ``{}`` / None (any JSON object)."""
    if not response_format:
        return {"type": "object"}
    if not isinstance(response_format, dict):
        raise SchemaError(f"response_format must be a JSON schema (a dict), got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind == "json_schema" and isinstance(response_format.get("json_schema"), dict):
        inner = response_format["json_schema"]
        return json_schema_of(inner.get("schema") or {})
    if kind == "json_object" and set(response_format) <= {"type"}:
        return {"type": "object"}
    return response_format


class _Vocabulary:
    """Per-tokenizer tables: llguidance's tokenizer, each token's bytes, and which tokens start with whitespace,
    close something or open with a quote."""

    def __init__(self, tokenizer: Any):
        self.ll = llguidance.hf.from_tokenizer(tokenizer)
        size = self.ll.vocab_size
        self.token_bytes = [self.ll.decode_bytes([i]) for i in range(size)]
        self.ids_of: dict[bytes, list[int]] = {}
        for token, raw in enumerate(self.token_bytes):
            if raw and not self.ll.is_special_token(token):
                self.ids_of.setdefault(raw, []).append(token)
        self.longest = max((len(raw) for raw in self.ids_of), default=1)
        texts = [raw.decode("utf-8", errors="replace") for raw in self.token_bytes]
        self.leading_space = torch.tensor([bool(t) and t[0].isspace() for t in texts])
        self.closing = torch.tensor([bool(t) and set(t) <= _CLOSERS for t in texts])
        self.separating = torch.tensor([bool(t) and set(t) <= _CLOSERS | {","} for t in texts])
        self.quote_first = torch.tensor([t.startswith('"') for t in texts])
        eos = tokenizer.eos_token_id
        if eos is not None and eos < size:
            self.closing[eos] = self.separating[eos] = True


_vocabularies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_vocabularies_lock = threading.Lock()


def vocabulary(tokenizer: Any) -> _Vocabulary:
    """The shared tables of one tokenizer (built once: decoding every token takes a moment on large vocabularies)."""
    with _vocabularies_lock:
        found = _vocabularies.get(tokenizer)
        if found is None:
            found = _vocabularies[tokenizer] = _Vocabulary(tokenizer)
        return found


def compile_schema(schema: dict[str, Any], separators: dict[str, Any] | None = None) -> str:
    """The llguidance grammar of a JSON schema (compact JSON unless ``separators`` say otherwise).

    An object schema with ``properties`` and no word on ``additionalProperties`` gets exactly its properties (as
    OpenAI's strict mode does): JSON Schema would allow any extra key, and a model would write some.
    """
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(
            _closed(schema),
            defaults=cast(Any, {**COMPACT, **(separators or {})}),  # a JsonCompileOptions dict
        )
    except Exception as error:  # llguidance raises ValueError/RuntimeError with its own message
        raise SchemaError(f"structured output cannot follow this JSON schema: {error}") from error


@dataclass
class _RowState:
    """Where a row is in its JSON, tracked on the bytes it wrote (only what the two rules and copying need)."""

    consumed: int = 0  # tokens already fed to the matcher
    written: bytearray = field(default_factory=bytearray)
    in_string: bool = False
    escaped: bool = False
    value_start: int = 0  # where the current string's content, or the current bare value, starts in ``written``
    string_tokens: int = 0  # tokens written inside the open string
    free_steps: int = 0  # steps where the grammar left a choice (forced syntax does not use up the budget)

    def feed(self, raw: bytes) -> None:
        opened_here = False
        for byte in raw:
            self.written.append(byte)
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif byte == 0x5C:  # backslash
                    self.escaped = True
                elif byte == 0x22:  # the closing quote
                    self.in_string = False
                    self.value_start = len(self.written)
            elif byte == 0x22:
                self.in_string, opened_here = True, True
                self.value_start = len(self.written)
            elif byte in b" :,[{}]":
                self.value_start = len(self.written)
        if self.in_string:
            self.string_tokens = int(self.value_start < len(self.written)) if opened_here else self.string_tokens + 1

    @property
    def value(self) -> bytes:
        return bytes(self.written[self.value_start :])


def _closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists properties and says nothing."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {
        key: (value if key in ("const", "enum", "default", "examples") else _closed(value))
        for key, value in schema.items()
    }
    if "properties" in schema and "additionalProperties" not in schema and "patternProperties" not in schema:
        closed["additionalProperties"] = False
    return closed


class JsonConstraint:
    """The token filter of one decode: row ``i`` follows ``grammars[i]`` (None: unconstrained).

    ``sources[i]`` (text the user wrote) makes values copied from it likelier by ``copy_bias`` (in log-probability):
    a small model asked to call ``weather(city)`` after "weather in Oslo?" then writes "Oslo" rather than a city of
    its own. Quoted spans of the source, when there are any, are what is copied.
    """

    def __init__(
        self,
        tokenizer: Any,
        grammars: Sequence[str | None],
        vocab_width: int,
        max_tokens: int,
        schema_size: int = 0,
        sources: Sequence[str | None] | None = None,
        copy_bias: float = 0.0,
    ):
        self.vocab = vocabulary(tokenizer)
        self.width = vocab_width
        self.max_tokens = max_tokens
        self.schema_size = schema_size  # characters of the schema(s): room for the keys still to write
        self.copy_bias = copy_bias
        self.matchers: list[llguidance.LLMatcher | None] = []
        for grammar in grammars:
            if grammar is None:
                self.matchers.append(None)
                continue
            matcher = llguidance.LLMatcher(self.vocab.ll, grammar)
            if matcher.is_error():
                raise SchemaError(f"structured output cannot follow this JSON schema: {matcher.get_error()}")
            self.matchers.append(matcher)
        self.states = [_RowState() for _ in self.matchers]
        self.sources = [_copy_spans(text) for text in (sources or [None] * len(self.matchers))]
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, self.vocab.ll.vocab_size)

    @property
    def hard_limit(self) -> int:
        """Tokens a row may take in all: the budget, plus room to close what is open."""
        return 2 * self.max_tokens + 64 + self.schema_size // 4

    def __call__(self, rows: list[int], generated: list[list[int]]) -> torch.Tensor | None:
        """(B, V) additive scores: -inf for tokens the grammar forbids, ``copy_bias`` for copying, else 0."""
        if all(self.matchers[row] is None for row in rows):
            return None
        scores = torch.zeros(len(rows), self.width)
        for index, (row, ids) in enumerate(zip(rows, generated, strict=True)):
            matcher = self.matchers[row]
            if matcher is not None:
                scores[index] = self._row_scores(row, matcher, ids)
        return scores

    def _row_scores(self, row: int, matcher: llguidance.LLMatcher, ids: list[int]) -> torch.Tensor:
        state = self.states[row]
        for token in ids[state.consumed :]:
            if not matcher.consume_token(token):
                raise SchemaError(f"structured output left its grammar: {matcher.get_error()}")
            state.feed(self.vocab.token_bytes[token] if token < len(self.vocab.token_bytes) else b"")
        state.consumed = len(ids)
        llguidance.torch.fill_next_token_bitmask(matcher, self.bitmask, 0)
        grammar = torch.zeros(1, self.vocab.ll.vocab_size)
        llguidance.torch.apply_token_bitmask_inplace(grammar, self.bitmask)
        mask = grammar[0] == 0
        if int(mask.sum()) > 1:
            state.free_steps += 1
        just_opened = state.in_string and state.value_start == len(state.written)
        if just_opened:  # no leading whitespace in a string
            mask = _narrowed(mask, ~self.vocab.leading_space)
        over_budget = state.free_steps > self.max_tokens
        copy = torch.zeros(mask.shape[0])
        if state.in_string and (state.string_tokens >= self.max_tokens or over_budget):
            mask = _narrowed(mask, self.vocab.quote_first)  # close the open string
        elif over_budget:
            narrowed = _narrowed(mask, self.vocab.closing)  # close a string, object or array if the grammar lets us
            mask = narrowed if narrowed is not mask else _narrowed(mask, self.vocab.separating)  # else end a value
        elif self.copy_bias and self.sources[row]:
            copy = self._copy_scores(state, self.sources[row])
        row_scores = torch.where(mask, copy * self.copy_bias, torch.tensor(float("-inf")))
        full = torch.full((self.width,), float("-inf"))
        size = min(self.width, row_scores.shape[0])
        full[:size] = row_scores[:size]
        return full

    def _copy_scores(self, state: _RowState, spans: list[tuple[bytes, bool]]) -> torch.Tensor:
        """1 for tokens that start a copy of a source span (a quoted span at its start, the whole text at any word),
        continue one, or end it (a quoted span where it ends, the whole text where a word ends)."""
        scores = torch.zeros(self.vocab.ll.vocab_size)
        value = state.value
        for span, any_word in spans:
            for position in range(len(span) if any_word else 1):
                if (position > 0 and _word_byte(span[position - 1])) or not span.startswith(value, position):
                    continue
                rest = span[position + len(value) : position + len(value) + self.vocab.longest]
                for length in range(1, len(rest) + 1):
                    for token in self.vocab.ids_of.get(rest[:length], ()):
                        scores[token] = 1.0
                if value and (not rest or (any_word and not _word_byte(rest[0]))):  # a quoted span is copied whole
                    scores[self.vocab.quote_first if state.in_string else self.vocab.separating] = 1.0
        return scores

    def finished(self, row: int) -> bool:
        matcher = self.matchers[row]
        return matcher is None or matcher.is_accepting() or matcher.is_stopped()


def _word_byte(byte: int) -> bool:
    """Part of a word: a letter, a digit, or any byte of a non-ASCII character."""
    return byte >= 0x80 or chr(byte).isalnum()


def _copy_spans(text: str | None) -> list[tuple[bytes, bool]]:
    """What values may be copied from, and whether a copy may start at any word: the quoted spans of ``text``
    (copied from their start) when it has any, else the whole text."""
    if not text:
        return []
    quoted = re.findall(r"'([^'\n]+)'|\"([^\"\n]+)\"|“([^”\n]+)”", text)
    spans = [next(part for part in groups if part) for groups in quoted]
    return [(span.encode(), False) for span in spans] if spans else [(text.encode(), True)]


def _narrowed(mask: torch.Tensor, preferred: torch.Tensor) -> torch.Tensor:
    """``mask`` and ``preferred`` when they share a token, else ``mask`` (a rule never leaves no choice)."""
    both = mask & preferred
    return both if bool(both.any()) else mask
