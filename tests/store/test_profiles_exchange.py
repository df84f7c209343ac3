"""The history (JSONL) and export (JSON) parsers: round trips, one-line errors with line numbers, and property
tests that arbitrary input only ever raises ``ImportFormatError``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles import ImportFormatError, ProfileExport, parse_export, parse_history
from profiles.exchange import (
    ExportedConversation,
    ExportedFeedback,
    ExportedMessage,
    ExportedRewardHead,
    ExportedSetting,
)
from profiles.ids import is_valid_user_id

texts = st.text(min_size=1, max_size=40).filter(lambda text: text.strip())
times = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))
roles = st.sampled_from(["user", "assistant", "system"])
history_records = st.fixed_dictionaries(
    {"role": roles, "text": texts},
    optional={"created_at": times.map(datetime.isoformat), "conversation": st.text(max_size=8)},
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(st.lists(history_records, max_size=8))
def test_history_lines_round_trip(records: list[dict]) -> None:
    parsed = parse_history([json.dumps(record) for record in records])
    assert [(line.role, line.text, line.conversation) for line in parsed] == [
        (record["role"], record["text"], record.get("conversation")) for record in records
    ]
    for line, record in zip(parsed, records, strict=True):
        if "created_at" in record:
            assert line.created_at == datetime.fromisoformat(record["created_at"])


@given(st.lists(st.text(max_size=30) | json_values.map(json.dumps), max_size=6))
def test_arbitrary_history_input_only_raises_import_format_errors(lines: list[str]) -> None:
    try:
        parse_history(lines)
    except ImportFormatError as error:
        assert error.line is not None and 1 <= error.line <= len(lines)  # noqa: PT017 - valid input may not raise
        assert "\n" not in str(error)  # noqa: PT017


def test_a_malformed_history_line_is_reported_by_number() -> None:
    lines = ['{"role": "user", "text": "fine"}', "", '{"role": "user", "text": "also fine"}', "{oops"]
    with pytest.raises(ImportFormatError, match=r"history, line 4: not valid JSON") as error:
        parse_history(lines)
    assert error.value.line == 4
    with pytest.raises(ImportFormatError, match=r"line 2: text: text is empty"):
        parse_history(['{"role": "user", "text": "ok"}', '{"role": "user", "text": "  "}'])
    with pytest.raises(ImportFormatError, match=r"line 1: role"):
        parse_history(['{"role": "robot", "text": "beep"}'])


def test_history_accepts_content_and_epoch_timestamps() -> None:
    (line,) = parse_history(['{"role": "user", "content": "hi", "timestamp": 1700000000}'])
    assert line.text == "hi" and line.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


user_ids = st.text(min_size=1, max_size=40).filter(is_valid_user_id)
ratings = st.builds(
    ExportedFeedback, prompt=texts, response=texts, rating=st.floats(-1, 1), message_ref=st.none(), created_at=times
)
pairs = st.builds(ExportedFeedback, prompt=texts, chosen=texts, rejected=texts, message_ref=st.none(), created_at=times)
messages = st.builds(ExportedMessage, ref=st.integers(1, 10**6), role=roles, text=texts, created_at=times)
exports = st.builds(
    ProfileExport,
    user_id=user_ids,
    created_at=times,
    conversations=st.lists(
        st.builds(
            ExportedConversation,
            title=st.none() | st.text(max_size=10),
            created_at=times,
            messages=st.lists(messages, max_size=3, unique_by=lambda m: m.ref),
        ),
        max_size=3,
    ).filter(lambda cs: len({m.ref for c in cs for m in c.messages}) == sum(len(c.messages) for c in cs)),
    feedback=st.lists(ratings | pairs, max_size=3),
    preferences=st.lists(
        st.builds(ExportedSetting, dimension=texts, pole=texts, updated_at=times),
        max_size=2,
        unique_by=lambda setting: setting.dimension,
    ),
    reward_heads=st.lists(
        st.builds(
            ExportedRewardHead,
            name=texts,
            data=st.binary(max_size=64),
            meta=st.dictionaries(st.text(max_size=5), st.integers()),
            created_at=times,
        ),
        max_size=2,
        unique_by=lambda head: head.name,
    ),
)


@settings(max_examples=50)
@given(exports)
def test_exports_round_trip_through_json(export: ProfileExport) -> None:
    assert parse_export(export.to_json()) == export


@given(json_values)
def test_arbitrary_json_is_rejected_with_an_import_format_error(value: object) -> None:
    with pytest.raises(ImportFormatError):
        parse_export(json.dumps(value))


@given(json_values)
def test_arbitrary_content_in_a_v1_envelope_only_raises_import_format_errors(value: object) -> None:
    document = {
        "format": "panda-chat/profile",
        "version": 1,
        "user_id": "u",
        "created_at": "2024-01-01T00:00:00Z",
        "conversations": value,
    }
    try:
        parse_export(json.dumps(document))
    except ImportFormatError as error:
        assert "\n" not in str(error)  # noqa: PT017 - valid input may not raise


def test_export_errors_say_what_is_wrong() -> None:
    with pytest.raises(ImportFormatError, match="not valid JSON"):
        parse_export("{")
    with pytest.raises(ImportFormatError, match="not a panda-chat profile export"):
        parse_export('{"format": "something-else"}')
    with pytest.raises(ImportFormatError, match="export version 2 is newer"):
        parse_export('{"format": "panda-chat/profile", "version": 2}')
    document = {
        "format": "panda-chat/profile",
        "version": 1,
        "user_id": "u",
        "created_at": "2024-01-01T00:00:00Z",
        "feedback": [{"prompt": "p", "rating": 1, "message_ref": 7, "created_at": "2024-01-01T00:00:00Z"}],
    }
    with pytest.raises(ImportFormatError, match="message ref 7"):
        parse_export(json.dumps(document))
