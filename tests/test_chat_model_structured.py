"""Schema-guided JSON: whatever the model chooses, the output parses and has the schema's shape."""

from __future__ import annotations

import json
import random
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.utils.function_calling import convert_to_json_schema
from pydantic import BaseModel
from typing_extensions import TypedDict

from panda_chat.chat_model.structured import MAX_ARRAY_ITEMS, JsonWriter


class ScriptedModel:
    """Strings from a fixed list of awkward texts; choices at random (seeded): the writer must cope with any."""

    def __init__(self, seed: int, strings: list[str]):
        self.rng = random.Random(seed)
        self.strings = strings
        self.prefixes: list[str] = []

    def generate_string(self, prefix, on_piece):
        self.prefixes.append(prefix)
        text = self.rng.choice(self.strings)
        for start in range(0, len(text), 3):
            on_piece(text[start : start + 3])
        return text

    def choose(self, prefix, options):
        self.prefixes.append(prefix)
        return self.rng.randrange(len(options))


class Address(BaseModel):
    city: str
    zip_code: int


class Person(BaseModel):
    name: str
    age: int
    height: float
    admin: bool
    role: Literal["user", "owner"]
    nickname: str | None = None
    address: Address
    tags: list[str]
    scores: dict[str, int]


class Joke(TypedDict):
    setup: str
    punchline: str


AWKWARD = ["plain", 'with "quotes"', "back\\slash", "new\nline", "", "ünïcødé ☃", "{not json}"]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_any_choices_give_a_valid_instance(seed):
    pieces: list[str] = []
    model = ScriptedModel(seed, AWKWARD)
    text = JsonWriter(model, emit=pieces.append).write(Person.model_json_schema())
    assert "".join(pieces) == text  # streaming emits exactly the final text
    person = Person.model_validate(json.loads(text))
    assert len(person.tags) <= MAX_ARRAY_ITEMS
    assert person.name in AWKWARD


def test_the_model_sees_the_json_written_so_far():
    model = ScriptedModel(0, ["x"])
    JsonWriter(model).write(convert_to_json_schema(Joke))
    assert model.prefixes[0] == '{"setup":"'
    assert model.prefixes[1] == '{"setup":"x","punchline":"'


def test_json_mode_without_a_schema_writes_a_string_keyed_object():
    for seed in range(20):
        value = json.loads(JsonWriter(ScriptedModel(seed, AWKWARD)).write(None))
        assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def test_enum_and_boolean_follow_the_model_choice():
    class First:
        def generate_string(self, prefix, on_piece):
            return ""

        def choose(self, prefix, options):
            return len(options) - 1

    schema = {"type": "object", "properties": {"b": {"type": "boolean"}, "e": {"enum": ["a", "b", "c"]}}}
    assert json.loads(JsonWriter(First()).write(schema)) == {"b": False, "e": "c"}


def test_an_unsupported_type_is_a_clear_error():
    with pytest.raises(ValueError, match="does not support the JSON schema type 'foo'"):
        JsonWriter(ScriptedModel(0, ["x"])).write({"type": "foo"})
