"""Preference-pair parsing: both line forms, HH-RLHF dialogue splitting, and errors that name the line."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from panda_chat.rewards.data import (
    PairDataError,
    PreferencePair,
    load_pairs,
    parse_pair_lines,
    split_dialogue,
    write_pairs,
)


def test_prompt_form_and_dialogue_form_are_both_read():
    lines = [
        json.dumps({"prompt": "Why is the sky blue?", "chosen": "Rayleigh scattering.", "rejected": "It is."}),
        "",
        json.dumps(
            {
                "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello, how can I help?",
                "rejected": "\n\nHuman: Hi there\n\nAssistant: What.",
            }
        ),
    ]
    pairs = parse_pair_lines(lines)
    assert pairs[0] == PreferencePair(prompt="Why is the sky blue?", chosen="Rayleigh scattering.", rejected="It is.")
    assert pairs[1] == PreferencePair(prompt="Hi there", chosen="Hello, how can I help?", rejected="What.")


def test_multi_turn_dialogue_keeps_its_transcript_as_the_prompt():
    head = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Tell me a joke"
    pair = split_dialogue(head + "\n\nAssistant: A pun.", head + "\n\nAssistant: No.")
    assert pair.prompt == head.strip()
    assert (pair.chosen, pair.rejected) == ("A pun.", "No.")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ('{"prompt": "p", "chosen": "a"}', "rejected"),
        ('{"chosen": "a"}', "missing field"),
        ('{"prompt": "p", "chosen": "same", "rejected": "same"}', "same text"),
        ('{"chosen": "Human: a Assistant: x", "rejected": "Human: b Assistant: y"}', "differ before"),
        ('{"chosen": "no turns", "rejected": "here"}', "Assistant:"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_malformed_line_error_names_the_line_number(line, reason):
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    with pytest.raises(PairDataError, match=rf"data.jsonl, line 3: .*{reason}"):
        parse_pair_lines([good, good, line], source="data.jsonl")


def test_load_pairs_round_trips_and_rejects_missing_or_empty_files(tmp_path):
    pairs = [PreferencePair(prompt="p", chosen="a", rejected="b"), PreferencePair(prompt="", chosen="c", rejected="d")]
    assert load_pairs(write_pairs(pairs, tmp_path / "d.jsonl")) == pairs
    with pytest.raises(PairDataError, match="not found"):
        load_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(PairDataError, match="no preference pairs"):
        load_pairs(tmp_path / "empty.jsonl")


# Turn texts never contain the role markers themselves and are not blank.
_turn = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40).filter(
    lambda s: s.strip() and "Human:" not in s and "Assistant:" not in s
)


@given(question=_turn, chosen=_turn, rejected=_turn)
def test_dialogue_split_recovers_prompt_and_responses(question, chosen, rejected):
    if chosen.strip() == rejected.strip():
        return
    head = f"\n\nHuman: {question}\n\nAssistant: "
    pair = split_dialogue(head + chosen, head + rejected)
    assert (pair.prompt, pair.chosen, pair.rejected) == (question.strip(), chosen.strip(), rejected.strip())


@given(triples=st.lists(st.tuples(st.text(max_size=30), _turn, _turn).filter(lambda t: t[1] != t[2]), max_size=5))
def test_jsonl_lines_round_trip(triples):
    pairs = [PreferencePair(prompt=p, chosen=c, rejected=r) for p, c, r in triples]
    lines = [json.dumps(p.model_dump()) for p in pairs]
    assert parse_pair_lines(lines) == pairs
