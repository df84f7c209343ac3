"""Schema-constrained JSON: whatever the model prefers, the answer is a valid instance of the schema."""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from panda_chat.chat_model import ChatPanda
from panda_chat.chat_model.structured import SchemaError, json_schema_of


@pytest.fixture(scope="module")
def llm(tiny_models):
    """The random tiny model, nothing stored: its raw preferences are as arbitrary as a model's can be."""
    return ChatPanda(model=str(tiny_models.base), record=False, personalize=False, max_tokens=6, device="cpu")


def decode(llm: ChatPanda, schema: dict, seed: int = 0, temperature: float = 1.0) -> tuple[str, object]:
    message = llm.invoke("Answer as JSON.", response_format=schema, temperature=temperature, seed=seed)
    return message.content, json.loads(message.content)


# ------------------------------------------------------------------------------------------ random schemas (property)

_patterns = st.sampled_from(["^[a-z]{1,4}$", "^[0-9]{3}$", "^(yes|no)$", "^[A-Z][a-z]{0,3}$"])


@st.composite
def _integer(draw) -> dict:
    schema: dict = {"type": "integer"}
    low = draw(st.integers(-50, 50))
    if draw(st.booleans()):
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = low + draw(st.integers(2, 100))
    if draw(st.booleans()) and "minimum" in schema and "maximum" in schema:
        schema["multipleOf"] = draw(st.sampled_from([1, 2, 5]))
        schema["maximum"] = schema["minimum"] + 10 * schema["multipleOf"]
    return schema


@st.composite
def _number(draw) -> dict:
    low = draw(st.floats(-10, 10, allow_nan=False).map(lambda x: round(x, 1)))
    schema: dict = {"type": "number", "minimum": low} if draw(st.booleans()) else {"type": "number"}
    if draw(st.booleans()):
        schema["exclusiveMaximum"] = low + 5
    return schema


@st.composite
def _string(draw) -> dict:
    if draw(st.booleans()):
        return {"type": "string", "pattern": draw(_patterns)}
    low = draw(st.integers(0, 3))
    schema = {"type": "string", "minLength": low}
    if draw(st.booleans()):
        schema["maxLength"] = low + draw(st.integers(0, 6))
    return schema


_leaves = st.one_of(
    _integer(),
    _number(),
    _string(),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.sampled_from(["red", "green", "blue", 3, None]), min_size=1, max_size=3, unique=True).map(
        lambda values: {"enum": values}
    ),
    st.sampled_from(["fixed", 7, True]).map(lambda value: {"const": value}),
)


def _composite(children: st.SearchStrategy) -> st.SearchStrategy:
    names = st.sampled_from(["a", "b", "name", "count", "items", "kind"])

    @st.composite
    def obj(draw) -> dict:
        properties = draw(st.dictionaries(names, children, min_size=1, max_size=3))
        required = [name for name in properties if draw(st.booleans())]
        return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}

    @st.composite
    def array(draw) -> dict:
        low = draw(st.integers(0, 2))
        return {"type": "array", "items": draw(children), "minItems": low, "maxItems": low + draw(st.integers(0, 2))}

    branches = st.lists(children, min_size=2, max_size=2).map(lambda b: {"anyOf": b})
    one_of = st.tuples(_integer(), st.just({"type": "string", "maxLength": 3})).map(lambda b: {"oneOf": list(b)})
    return st.one_of(obj(), array(), branches, one_of)


schemas = st.recursive(_leaves, _composite, max_leaves=6)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(schema=schemas, seed=st.integers(0, 1000))
def test_random_schemas_always_give_valid_instances(llm, schema, seed):
    _, value = decode(llm, {"type": "object", "properties": {"answer": schema}, "required": ["answer"]}, seed)
    jsonschema.validate(value, {"type": "object", "properties": {"answer": schema}, "required": ["answer"]})


# ---------------------------------------------------------------------------------------------- what users ask for


class Review(BaseModel):
    stars: int = Field(ge=1, le=5)
    title: str = Field(min_length=2, max_length=12)
    score: float = Field(gt=0, lt=1)
    verdict: str = Field(pattern=r"^(good|bad|meh)$")
    summary: str | None = None


def test_bounds_lengths_and_patterns_hold_in_every_sampled_answer(llm):
    structured = llm.with_structured_output(Review)
    for seed in range(10):
        review = structured.invoke("Review the film.", temperature=1.0, seed=seed)
        assert isinstance(review, Review)  # pydantic validated every constraint


def test_string_values_never_start_with_whitespace(llm):
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "minLength": 1}, "b": {"type": "string"}},
        "required": ["a", "b"],
    }
    for seed in range(5):
        _, value = decode(llm, schema, seed)
        assert all(not text[:1].isspace() for text in value.values())


def test_the_json_is_compact_and_streams_in_pieces(llm):
    schema = Review.model_json_schema()
    chunks = list(llm.stream("Review it.", response_format=schema))
    text = "".join(chunk.content for chunk in chunks)
    assert len([c for c in chunks if c.content]) > 1
    assert json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False) == text  # compact, no stray space
    Review.model_validate_json(text)


def test_openai_envelope_and_json_object_are_accepted(llm):
    envelope = {"type": "json_schema", "json_schema": {"name": "review", "schema": Review.model_json_schema()}}
    assert json_schema_of(envelope) == Review.model_json_schema()
    assert isinstance(llm.with_structured_output(envelope).invoke("Review it."), dict)
    Review.model_validate(llm.with_structured_output(envelope).invoke("Review it."))
    assert isinstance(llm.invoke("x", response_format={"type": "json_object"}).content, str)
    assert isinstance(json.loads(llm.invoke("x", response_format={"type": "json_object"}).content), dict)


def test_a_schema_it_cannot_follow_is_a_clear_error(llm):
    with pytest.raises(SchemaError, match="cannot follow this JSON schema"):
        llm.invoke("x", response_format={"type": "string", "pattern": "(unclosed"})


def test_a_batch_of_structured_calls_is_one_decode_of_valid_rows(llm):
    answers = llm.batch(["one", "two", "three"], response_format=Review.model_json_schema(), temperature=1.0, seed=3)
    for answer in answers:
        Review.model_validate_json(answer.content)
