"""Which turns of a call are new to the stored conversation: never store a turn twice."""

from __future__ import annotations

from panda_chat.chat_model.recording import new_turns

H1, A1, H2, A2, H3 = ("user", "h1"), ("assistant", "a1"), ("user", "h2"), ("assistant", "a2"), ("user", "h3")


def test_first_call_stores_the_whole_history():
    assert new_turns([], [H1, A1, H2]) == [H1, A1, H2]


def test_full_history_each_call_stores_only_what_follows_the_stored_tail():
    assert new_turns([H1, A1], [H1, A1, H2]) == [H2]
    assert new_turns([H1, A1, H2, A2], [H1, A1, H2, A2, H3]) == [H3]


def test_a_retry_of_the_last_question_stores_nothing_new():
    assert new_turns([H1, A1, H2, A2], [H1, A1, H2]) == []
    assert new_turns([H1], [H1]) == []


def test_only_the_newest_message_each_call():
    assert new_turns([H1, A1], [H2]) == [H2]


def test_a_repeated_text_earlier_in_the_history_does_not_fool_the_alignment():
    thanks, ok = ("user", "thanks"), ("assistant", "ok")
    stored = [thanks, ok, H2, ok]
    incoming = [thanks, ok, H2, ok, thanks]
    assert new_turns(stored, incoming) == [thanks]


def test_unalignable_history_stores_just_the_newest_human_turn():
    assert new_turns([H1, A1], [("user", "x"), ("assistant", "y"), H3]) == [H3]
    assert new_turns([H1, A1], [("user", "x"), ("assistant", "y")]) == []
