"""Schema-constrained JSON: the model writes the whole answer, and at every step only tokens that keep it valid
for the JSON schema may become PANDA's candidates.

The constraint is a token filter on the decoder (``PandaDecoder.generate(token_filter=...)``), applied before the
top-k: PANDA re-scores the allowed candidates with the user's rewards as usual, so the values stay steered, and the
JSON always follows the schema (bounds, lengths, patterns, enums, required keys, branches), whatever the model.
The grammar is compiled and walked by llguidance (a token-level JSON-schema/regex engine in Rust: a mask for the whole
vocabulary costs tens of microseconds, so it fits inside the decoding loop).

Two rules on top of the schema, because small models need them:

- a string never starts with whitespace (BPE vocabularies favour " word" tokens right after a quote);
- closing pressure: once a string has had ``max_tokens`` tokens, or the answer has, the allowed tokens that close
  something (a quote, a brace, a bracket, the end; else a comma, which ends a number) are preferred, so a model that would ramble still finishes a
  valid instance within ``hard_limit`` tokens.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Sequence
from typing import Any

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
    """Per-tokenizer tables: llguidance's tokenizer, and which tokens start with whitespace or close something."""

    def __init__(self, tokenizer: Any):
        self.ll = llguidance.hf.from_tokenizer(tokenizer)
        size = self.ll.vocab_size
        texts = [tokenizer.decode([i]) if i < len(tokenizer) else "" for i in range(size)]
        self.leading_space = torch.tensor([bool(t) and t[0].isspace() for t in texts])
        self.closing = torch.tensor([bool(t) and set(t) <= _CLOSERS for t in texts])
        self.separating = torch.tensor([bool(t) and set(t) <= _CLOSERS | {","} for t in texts])
        self.quote_first = torch.tensor([t.startswith('"') for t in texts])
        eos = tokenizer.eos_token_id
        if eos is not None and eos < size:
            self.closing[eos] = self.separating[eos] = True
        self.tokenizer = tokenizer


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
    """The llguidance grammar of a JSON schema (compact JSON unless ``separators`` say otherwise)."""
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={**COMPACT, **(separators or {})})
    except Exception as error:  # llguidance raises ValueError/RuntimeError with its own message
        raise SchemaError(f"structured output cannot follow this JSON schema: {error}") from error


class JsonConstraint:
    """The token filter of one decode: row ``i`` follows ``grammars[i]`` (None: unconstrained)."""

    def __init__(self, tokenizer: Any, grammars: Sequence[str | None], vocab_width: int, max_tokens: int,
                 schema_size: int = 0):
        self.vocab = vocabulary(tokenizer)
        self.width = vocab_width
        self.max_tokens = max_tokens
        self.schema_size = schema_size  # characters of the schema(s): room for the keys still to write
        self.matchers: list[llguidance.LLMatcher | None] = []
        for grammar in grammars:
            if grammar is None:
                self.matchers.append(None)
                continue
            matcher = llguidance.LLMatcher(self.vocab.ll, grammar)
            if matcher.is_error():
                raise SchemaError(f"structured output cannot follow this JSON schema: {matcher.get_error()}")
            self.matchers.append(matcher)
        self.consumed = [0] * len(self.matchers)
        self.string_tokens = [0] * len(self.matchers)  # tokens spent inside the string now open (0: none open)
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, self.vocab.ll.vocab_size)

    @property
    def hard_limit(self) -> int:
        """Tokens a row may take in all: the budget, plus room to close what is open."""
        return 2 * self.max_tokens + 64 + self.schema_size // 4

    def __call__(self, rows: list[int], generated: list[list[int]]) -> torch.Tensor | None:
        if all(self.matchers[row] is None for row in rows):
            return None
        allowed = torch.ones(len(rows), self.width, dtype=torch.bool)
        for index, (row, ids) in enumerate(zip(rows, generated, strict=True)):
            matcher = self.matchers[row]
            if matcher is not None:
                allowed[index] = self._row_mask(row, matcher, ids)
        return allowed

    def _row_mask(self, row: int, matcher: llguidance.LLMatcher, ids: list[int]) -> torch.Tensor:
        for token in ids[self.consumed[row]:]:
            if not matcher.consume_token(token):
                raise SchemaError(f"structured output left its grammar: {matcher.get_error()}")
            self.string_tokens[row] = self._string_state(row, token)
        self.consumed[row] = len(ids)
        llguidance.torch.fill_next_token_bitmask(matcher, self.bitmask, 0)
        scores = torch.zeros(1, self.vocab.ll.vocab_size)
        llguidance.torch.apply_token_bitmask_inplace(scores, self.bitmask)
        grammar = scores[0] == 0
        mask = grammar
        if self.string_tokens[row] == 1:  # just after an opening quote: no leading whitespace
            mask = _narrowed(mask, ~self.vocab.leading_space)
        if self.string_tokens[row] > 0 and (self.string_tokens[row] > self.max_tokens or len(ids) >= self.max_tokens):
            mask = _narrowed(mask, self.vocab.quote_first)  # close the open string
        elif len(ids) >= self.max_tokens:
            narrowed = _narrowed(mask, self.vocab.closing)  # close a string, object or array if the grammar lets us
            mask = narrowed if narrowed is not mask else _narrowed(mask, self.vocab.separating)  # else end a value
        full = torch.zeros(self.width, dtype=torch.bool)
        size = min(self.width, mask.shape[0])
        full[:size] = mask[:size]
        return full

    def _string_state(self, row: int, token: int) -> int:
        """1 + tokens inside the string open after ``token`` (0 when no string is open)."""
        text = self.vocab.tokenizer.decode([token])
        state = self.string_tokens[row]
        inside, escaped = state > 0, False
        for char in text:
            if inside and escaped:
                escaped = False
            elif inside and char == "\\":
                escaped = True
            elif char == '"':
                inside = not inside
                state = 1 if inside else 0
                continue
        if inside and state > 0 and not text.endswith('"'):
            state += 1
        return state

    def finished(self, row: int) -> bool:
        matcher = self.matchers[row]
        return matcher is None or matcher.is_accepting() or matcher.is_stopped()


def _narrowed(mask: torch.Tensor, preferred: torch.Tensor) -> torch.Tensor:
    """``mask`` and ``preferred`` when they share a token, else ``mask`` (a rule never leaves no choice)."""
    both = mask & preferred
    return both if bool(both.any()) else mask


def parse_json(text: str) -> Any:
    """The JSON value of a constrained answer (the end-of-turn text after it, if any, ignored)."""
    value, _ = json.JSONDecoder().raw_decode(text.strip())
    return value
