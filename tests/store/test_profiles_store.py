"""The store's recording API: users, conversations, messages, settings, feedback, reward heads, and its errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from profiles import (
    HashingEmbedder,
    InvalidInputError,
    ProfileStore,
    UnknownDimensionError,
    UnknownPoleError,
    UnknownUserError,
    UserExistsError,
)


def test_add_message_creates_the_user_and_a_conversation(store: ProfileStore) -> None:
    assert not store.has_user("alice")
    first = store.add_message("alice", "user", "hello")
    second = store.add_message("alice", "assistant", "hi, how can I help?", conversation_id=first.conversation_id)
    third = store.add_message("alice", "user", "a new topic")
    assert store.has_user("alice")
    assert second.conversation_id == first.conversation_id != third.conversation_id
    assert [(m.role, m.text, m.message_id) for m in store.conversation_messages(first.conversation_id)] == [
        ("user", "hello", first.message_id),
        ("assistant", "hi, how can I help?", second.message_id),
    ]


def test_new_conversation_and_messages_keep_their_timestamps(store: ProfileStore) -> None:
    conversation = store.new_conversation("alice")
    then = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.add_message("alice", "user", "later", conversation_id=conversation, created_at=then + timedelta(hours=1))
    store.add_message("alice", "user", "earlier", conversation_id=conversation, created_at=then)
    messages = store.conversation_messages(conversation)
    assert [m.text for m in messages] == ["earlier", "later"]
    assert messages[0].created_at == then


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_refused_and_nothing_is_stored(store: ProfileStore, text: str) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        store.add_message("alice", "user", text)
    assert not store.has_user("alice")


def test_a_batch_with_one_bad_message_stores_none_of_them(store: ProfileStore) -> None:
    store.create_user("alice")
    with pytest.raises(InvalidInputError, match="role"):
        store.add_messages("alice", [("user", "fine", None), ("robot", "bad role", None)])
    assert store.messages("alice") == []


def test_a_conversation_of_another_user_is_refused(store: ProfileStore) -> None:
    bobs = store.add_message("bob", "user", "bob's message").conversation_id
    with pytest.raises(InvalidInputError, match="does not belong"):
        store.add_message("alice", "user", "sneaky", conversation_id=bobs)
    assert [m.text for m in store.conversation_messages(bobs)] == ["bob's message"]
    # read on behalf of a user, it is refused the same way (and so is a conversation that does not exist)
    assert [m.text for m in store.conversation_messages(bobs, "bob")] == ["bob's message"]
    store.create_user("alice")
    for reader, conversation in (("alice", bobs), ("carol", bobs), ("bob", bobs + 1000)):
        with pytest.raises(InvalidInputError, match="does not belong"):
            store.conversation_messages(conversation, reader)


def test_users_are_created_once_and_listed(store: ProfileStore) -> None:
    store.create_user("carol")
    with pytest.raises(UserExistsError):
        store.create_user("carol")
    store.add_message("alice", "user", "one")
    store.add_message("alice", "user", "two")
    summaries = {s.user_id: s for s in store.list_users()}
    assert list(summaries) == ["alice", "carol"]
    assert summaries["alice"].messages == 2 and summaries["carol"].messages == 0
    assert summaries["carol"].last_message_at is None


def test_unknown_users_raise_on_reads_that_need_them(store: ProfileStore) -> None:
    with pytest.raises(UnknownUserError, match="unknown user 'nobody'"):
        store.messages("nobody")
    with pytest.raises(UnknownUserError):
        store.forget("nobody")
    assert store.search("nobody", "anything") == []


def test_explicit_settings_validate_against_the_catalog(store: ProfileStore) -> None:
    store.set_preference("alice", "tone", "formal")
    store.set_preference("alice", "tone", "friendly")
    assert store.explicit_preferences("alice") == {"tone": "friendly"}
    with pytest.raises(UnknownDimensionError, match="unknown dimension 'humour'") as error:
        store.set_preference("alice", "humour", "dry")
    assert isinstance(error.value, ValueError)
    with pytest.raises(UnknownPoleError, match="choose one of: friendly, formal"):
        store.set_preference("alice", "tone", "grumpy")
    assert store.unset_preference("alice", "tone") is True
    assert store.unset_preference("alice", "tone") is False
    assert store.explicit_preferences("alice") == {}


def test_feedback_is_validated_and_turned_into_training_pairs(store: ProfileStore) -> None:
    store.add_feedback("alice", prompt="greet me", chosen="Hey there!", rejected="Good day to you.")
    store.add_feedback("alice", prompt="sum 2+2", response="4", rating=1.0)
    store.add_feedback("alice", prompt="sum 2+2", response="Well, let us think about addition...", rating=-0.5)
    pairs = [(p.prompt, p.chosen, p.rejected) for p in store.feedback_pairs("alice")]
    assert pairs == [
        ("greet me", "Hey there!", "Good day to you."),
        ("sum 2+2", "4", "Well, let us think about addition..."),
    ]
    with pytest.raises(InvalidInputError, match="out of range"):
        store.add_feedback("alice", prompt="p", response="r", rating=3)
    with pytest.raises(InvalidInputError, match="either a rating"):
        store.add_feedback("alice", prompt="p", response="r")
    with pytest.raises(InvalidInputError, match="empty"):
        store.add_feedback("alice", prompt="p", chosen="a", rejected=" ")


def _evidence(store: ProfileStore, user: str) -> tuple[object, list[tuple[str, str, str, str, float]]]:
    context = store.preferences(user)
    return context.dimensions, [(e.kind, e.text, e.dimension, e.pole, e.score) for e in context.evidence]


def test_feedback_counts_the_same_recorded_imported_or_re_embedded(
    db_url: str, other_db_url: str, store: ProfileStore
) -> None:
    """The vectors stored with feedback line up with the texts inference reads back, however the feedback came
    in: recorded, imported from an export, or re-embedded after switching embedders."""
    store.add_message("alice", "user", "Explain recursion at length, with several worked examples.")
    store.add_feedback(
        "alice",
        prompt="What is an index fund?",
        chosen="Please give me a thorough, comprehensive explanation with examples.",
        rejected="Short answer: yes.",
    )
    store.add_feedback("alice", prompt="What is an index fund?", response="Elaborate on each point.", rating=0.8)
    recorded = _evidence(store, "alice")
    assert [kind for kind, *_ in recorded[1]].count("feedback") >= 2  # the comparison below can fail
    exported = store.export_user("alice")
    store.import_user(exported, user_id="alice2")
    assert _evidence(store, "alice2") == recorded
    other = HashingEmbedder(64)  # another name: the stored feedback vectors no longer apply
    with ProfileStore(db_url, embedder=other) as reopened, ProfileStore(other_db_url, embedder=other) as fresh:
        fresh.import_user(exported)
        assert _evidence(reopened, "alice") == _evidence(fresh, "alice")


def test_rating_a_stored_message_uses_its_text(store: ProfileStore) -> None:
    answer = store.add_message("alice", "assistant", "Paris is the capital of France.")
    store.add_feedback("alice", prompt="capital of France?", rating=1.0, message_id=answer.message_id)
    store.add_feedback("alice", prompt="capital of France?", response="Lyon", rating=-1.0)
    assert [(p.chosen, p.rejected) for p in store.feedback_pairs("alice")] == [
        ("Paris is the capital of France.", "Lyon")
    ]
    bobs = store.add_message("bob", "assistant", "bob's answer")
    with pytest.raises(InvalidInputError, match="does not belong"):
        store.add_feedback("alice", prompt="p", rating=1.0, message_id=bobs.message_id)


def test_reward_heads_are_saved_replaced_listed_and_deleted(store: ProfileStore) -> None:
    store.save_reward_head("alice", "bt-head", b"\x00\x01\x02", {"dim": 3})
    store.save_reward_head("alice", "bt-head", b"\x09", {"dim": 1})
    store.save_reward_head("alice", "other", b"", None)
    heads = store.reward_heads("alice")
    assert [(h.name, h.data, h.meta) for h in heads] == [("bt-head", b"\x09", {"dim": 1}), ("other", b"", {})]
    assert store.delete_reward_head("alice", "other") is True
    assert [h.name for h in store.reward_heads("alice")] == ["bt-head"]
    assert store.reward_heads("bob") == []
