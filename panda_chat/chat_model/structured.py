"""Schema-guided JSON: the code writes the JSON syntax, the model writes the values.

Small local models (the ones PANDA personalises) often cannot be trusted to write valid JSON by themselves. So
structured output never asks them to: the writer walks the JSON schema, emits every brace, key, quote and comma itself,
and asks the model only for what is genuinely open:

- a string value is decoded freely (with the user's PANDA steering) until the model closes the quote;
- a number, boolean, enum value, array length or optional field is picked among the allowed spellings by the model's
  own likelihood (``choose``).

The result always parses and always has the schema's shape, whatever the model; what the values say is up to the
model. This is how ``ChatPanda.with_structured_output`` and its ``json_mode`` work (and why they need no tool
calling). The JSON is compact (no space after ``:`` or ``,``), so a value's first token follows punctuation
directly and likelihood choices stay cheap.

Supported schema parts: object (properties, or free string-keyed ``additionalProperties``), array, string, integer,
number, boolean, null, enum, const, anyOf/oneOf (the first non-null branch, or null by likelihood), local ``$ref``s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# A free object (json_mode without a schema, or ``additionalProperties``) gets at most this many keys.
MAX_FREE_KEYS = 4
MAX_ARRAY_ITEMS = 5
MAX_INTEGER_DIGITS = 6
# What may follow a number inside JSON: choosing one of these over a digit ends the number.
_AFTER_NUMBER = (",", "}", "]")


class ValueModel(Protocol):
    """What the writer needs from a language model, given the JSON written so far (``prefix``)."""

    def generate_string(self, prefix: str, on_piece: Callable[[str], None]) -> str:
        """Free text that continues ``prefix`` inside a JSON string, up to (not including) the closing quote."""

    def choose(self, prefix: str, options: list[str]) -> int:
        """The index of the option the model finds most likely to continue ``prefix``."""


@dataclass
class JsonWriter:
    """Writes one JSON value for ``schema``; ``emit`` receives every piece of text as it is written (streaming)."""

    model: ValueModel
    emit: Callable[[str], None] = lambda piece: None

    def __post_init__(self) -> None:
        self._text = ""
        self._root: dict[str, Any] = {}

    def write(self, schema: dict[str, Any] | None) -> str:
        """The complete JSON text. ``None`` means any JSON object (``json_mode`` without a schema)."""
        self._text = ""
        self._root = schema or {}
        self._value(schema if schema is not None else {"type": "object"})
        return self._text

    # -- output -------------------------------------------------------------------------------------------------------

    def _put(self, piece: str) -> None:
        if piece:
            self._text += piece
            self.emit(piece)

    def _decide(self, options: list[str]) -> int:
        """Which option the model prefers after the text so far (nothing is written)."""
        return 0 if len(options) == 1 else self.model.choose(self._text, options)

    def _pick(self, options: list[str]) -> str:
        """Write the option the model prefers."""
        chosen = options[self._decide(options)]
        self._put(chosen)
        return chosen

    # -- schema walk --------------------------------------------------------------------------------------------------

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/") or seen > 32:
                raise ValueError(f"structured output supports local $ref only, got '{ref}'")
            target: Any = self._root
            for part in ref[2:].split("/"):
                target = target[part]
            schema, seen = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}, seen + 1
        if "allOf" in schema and len(schema["allOf"]) == 1:
            schema = {**self._resolve(schema["allOf"][0]), **{k: v for k, v in schema.items() if k != "allOf"}}
        return schema

    def _value(self, schema: dict[str, Any]) -> None:
        schema = self._resolve(schema)
        if "const" in schema:
            self._put(json.dumps(schema["const"]))
            return
        if "enum" in schema:
            self._pick([json.dumps(option) for option in schema["enum"]])
            return
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            self._branches([self._resolve(b) for b in branches])
            return
        kind = schema.get("type")
        if isinstance(kind, list):
            self._branches([{**schema, "type": k} for k in kind])
            return
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        writer = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._integer,
            "number": self._number,
            "boolean": self._boolean,
            "null": self._null,
        }.get(kind)
        if writer is None:
            raise ValueError(f"structured output does not support the JSON schema type '{kind}'")
        writer(schema)

    def _branches(self, branches: list[dict[str, Any]]) -> None:
        """Optional values (X or null): null or X by likelihood; among several non-null types, the first."""
        non_null = [b for b in branches if b.get("type") != "null"]
        if not non_null:
            self._null({})
            return
        if len(non_null) < len(branches):
            first = self._first_spelling(non_null[0])
            if first is not None and self._decide([first, "null"]) == 1:
                self._put("null")
                return
        self._value(non_null[0])

    def _first_spelling(self, schema: dict[str, Any]) -> str | None:
        """How a value of ``schema`` starts, to weigh it against ``null``."""
        kind = self._resolve(schema).get("type")
        return {"string": '"', "object": "{", "array": "[", "boolean": "true", "integer": "1", "number": "1"}.get(
            kind if isinstance(kind, str) else ""
        )

    def _object(self, schema: dict[str, Any]) -> None:
        properties: dict[str, Any] = schema.get("properties") or {}
        self._put("{")
        if properties:
            for index, (name, sub_schema) in enumerate(properties.items()):
                self._put(("" if index == 0 else ",") + json.dumps(name) + ":")
                self._value(sub_schema)
        else:
            extra = schema.get("additionalProperties")
            value_schema = extra if isinstance(extra, dict) else {"type": "string"}
            for index in range(MAX_FREE_KEYS):
                if index > 0:
                    if self._decide([',"', "}"]) == 1:
                        break
                    self._put(",")
                self._put('"')
                self._string_body()
                self._put('":')
                self._value(value_schema)
        self._put("}")

    def _array(self, schema: dict[str, Any]) -> None:
        given = schema.get("items")
        items: dict[str, Any] = given if isinstance(given, dict) else {"type": "string"}
        low = int(schema.get("minItems", 0))
        high = max(low, min(int(schema.get("maxItems", MAX_ARRAY_ITEMS)), MAX_ARRAY_ITEMS))
        opening = self._first_spelling(items) or '"'
        self._put("[")
        for count in range(high):
            if count >= low:
                more = "," + opening if count > 0 else opening
                if self._decide([more, "]"]) == 1:
                    break
            if count > 0:
                self._put(",")
            self._value(items)
        self._put("]")

    def _string(self, schema: dict[str, Any]) -> None:
        self._put('"')
        self._string_body()
        self._put('"')

    def _string_body(self) -> None:
        def on_piece(piece: str) -> None:
            escaped = json.dumps(piece, ensure_ascii=False)[1:-1]
            self._text += escaped
            self.emit(escaped)

        self.model.generate_string(self._text, on_piece)

    def _digits(self, leading_zero_alone: bool = True) -> None:
        """Digits until the model prefers what follows a number (at most ``MAX_INTEGER_DIGITS``)."""
        digits = [str(d) for d in range(10)]
        if self._pick(digits) == "0" and leading_zero_alone:
            return  # JSON integers have no leading zeros: a 0 stands alone
        for _ in range(MAX_INTEGER_DIGITS - 1):
            choice = self._decide(digits + list(_AFTER_NUMBER))
            if choice >= len(digits):
                return
            self._put(digits[choice])

    def _integer(self, schema: dict[str, Any]) -> None:
        if schema.get("minimum", -1) < 0 and self._decide(["-", "1"]) == 0:
            self._put("-")
        self._digits()

    def _number(self, schema: dict[str, Any]) -> None:
        self._integer(schema)
        if self._decide(["."] + list(_AFTER_NUMBER)) == 0:
            self._put(".")
            self._digits(leading_zero_alone=False)

    def _boolean(self, schema: dict[str, Any]) -> None:
        self._pick(["true", "false"])

    def _null(self, schema: dict[str, Any]) -> None:
        self._put("null")
