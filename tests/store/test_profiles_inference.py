"""Preference inference with the real default embedder: neutral start, implicit signals, recency, topic,
explicit overrides, feedback, isolation between users, and the context vector's layout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from profiles import PreferenceCatalog, PreferenceContext, ProfileStore, SentenceTransformerEmbedder

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

FORMAL = [
    "Dear assistant, I would be grateful for a formal assessment of our supplier contract.",
    "Kindly prepare a professional summary of the attached minutes for the board.",
    "I would appreciate a courteous and precise reply to the client's complaint.",
    "Please draft a formal letter informing our tenants of the scheduled maintenance.",
]
FRIENDLY = [
    "hey!! you're the best, can u help me pick a birthday gift for my bestie? :)",
    "lol ok thanks buddy, what should I cook tonight haha",
    "yo quick one, any fun weekend ideas?? :D",
    "omg thank you so much, that was awesome!!",
]
PHYSICS_EXPERT = [
    "Derive the renormalisation group beta function for phi^4 theory at one loop.",
    "How does the Hamiltonian constraint generate time reparametrisations in canonical gravity?",
    "Compare the Wilsonian and the 1PI effective action in quantum field theory, with the technical details.",
]
COOKING_BEGINNER = [
    "I'm a complete beginner in the kitchen, how do I even boil an egg?",
    "Sorry if this is a dumb question, I've never cooked: what does simmer mean?",
    "I'm totally new to cooking, please explain in plain words how to cook rice.",
]


def _log(store: ProfileStore, user: str, texts: list[str], *, days_ago: float) -> None:
    when = NOW - timedelta(days=days_ago)
    store.add_messages(user, [("user", text, when + timedelta(minutes=i)) for i, text in enumerate(texts)])


def test_a_user_without_history_gets_a_neutral_context(real_store: ProfileStore) -> None:
    for user in ["never-seen", "created-only"]:
        if user == "created-only":
            real_store.create_user(user)
        context = real_store.preferences(user, query="anything")
        assert context == PreferenceContext.neutral(real_store.catalog, user, "anything")
        assert all(d.confidence == 0 and d.source == "neutral" for d in context.dimensions.values())
        assert context.dimensions["tone"].weights == {"friendly": 0.5, "formal": 0.5}
        assert set(context.vector) == {0.0} and context.evidence == []


def test_implicit_signals_move_weights_with_evidence(real_store: ProfileStore) -> None:
    _log(real_store, "alice", FORMAL, days_ago=1)
    _log(real_store, "bob", FRIENDLY, days_ago=1)
    alice, bob = real_store.preferences("alice"), real_store.preferences("bob")
    assert alice.dimensions["tone"].weights["formal"] > 0.7 and alice.dimensions["tone"].source == "inferred"
    assert bob.dimensions["tone"].weights["friendly"] > 0.7
    assert alice.dimensions["tone"].confidence > 0.3
    tone_evidence = [e for e in alice.evidence if e.dimension == "tone"]
    assert tone_evidence and all(e.pole == "formal" and e.text in FORMAL for e in tone_evidence)
    assert {e.message_id for e in alice.evidence} <= {m.message_id for m in real_store.messages("alice")}


def test_confidence_grows_with_the_amount_of_evidence(real_store: ProfileStore) -> None:
    _log(real_store, "few", FORMAL[:1], days_ago=1)
    _log(real_store, "many", FORMAL, days_ago=1)
    assert (
        real_store.preferences("few").dimensions["tone"].confidence
        < real_store.preferences("many").dimensions["tone"].confidence
    )


def test_recent_messages_outweigh_old_ones(real_store: ProfileStore) -> None:
    _log(real_store, "changed", FORMAL, days_ago=200)
    _log(real_store, "changed", FRIENDLY, days_ago=1)
    _log(real_store, "changed-back", FRIENDLY, days_ago=200)
    _log(real_store, "changed-back", FORMAL, days_ago=1)
    assert real_store.preferences("changed").dimensions["tone"].top_pole == "friendly"
    assert real_store.preferences("changed-back").dimensions["tone"].top_pole == "formal"


def test_preferences_depend_on_the_topic_of_the_query(real_store: ProfileStore) -> None:
    """An expert in physics who is a beginner cook."""
    _log(real_store, "dana", PHYSICS_EXPERT + COOKING_BEGINNER, days_ago=1)
    physics = real_store.preferences("dana", query="What is the path integral of a free particle?")
    cooking = real_store.preferences("dana", query="How long should I bake a potato?")
    overall = real_store.preferences("dana")
    assert physics.dimensions["expertise"].top_pole == "expert"
    assert cooking.dimensions["expertise"].top_pole == "elementary"
    assert (
        physics.dimensions["expertise"].weights["expert"]
        > overall.dimensions["expertise"].weights["expert"]
        > cooking.dimensions["expertise"].weights["expert"]
    )
    assert physics.query == "What is the path integral of a free particle?"


def test_explicit_settings_override_inference(real_store: ProfileStore) -> None:
    _log(real_store, "alice", FORMAL, days_ago=1)
    real_store.set_preference("alice", "tone", "friendly")
    tone = real_store.preferences("alice").dimensions["tone"]
    assert tone.weights == {"friendly": 1.0, "formal": 0.0} and tone.confidence == 1.0 and tone.source == "explicit"
    real_store.unset_preference("alice", "tone")
    assert real_store.preferences("alice").dimensions["tone"].top_pole == "formal"


def test_feedback_moves_the_weights(real_store: ProfileStore) -> None:
    _log(real_store, "erin", ["Can you tell me about the history of Rome?"], days_ago=0)
    before = real_store.preferences("erin").dimensions["verbosity"].weights["detailed"]
    for topic in ["photosynthesis", "tax returns", "the French revolution"]:
        real_store.add_feedback(
            "erin",
            prompt=f"Tell me about {topic}.",
            chosen=f"Here is a thorough, step-by-step explanation of {topic}, with background, several examples "
            "and the full reasoning behind each point.",
            rejected=f"{topic}: short answer.",
        )
    after = real_store.preferences("erin")
    assert after.dimensions["verbosity"].weights["detailed"] > before + 0.2
    assert any(e.kind == "feedback" and e.dimension == "verbosity" for e in after.evidence)


def test_other_users_do_not_leak_into_inference(
    db_url: str, other_db_url: str, minilm: SentenceTransformerEmbedder
) -> None:
    """Alice's context is the same whether or not the store also holds many users with near-identical but
    opposite-signalling texts."""
    with ProfileStore(other_db_url, embedder=minilm) as alone:
        _log(alone, "alice", FORMAL, days_ago=1)
        expected = alone.preferences("alice", query="write to the board")
    with ProfileStore(db_url, embedder=minilm) as crowded:
        for number in range(20):
            _log(crowded, f"user{number}", [f"{t} lol :) ({number})" for t in FRIENDLY + FORMAL], days_ago=0)
        _log(crowded, "alice", FORMAL, days_ago=1)
        actual = crowded.preferences("alice", query="write to the board")
    assert actual.dimensions == expected.dimensions
    assert [e.text for e in actual.evidence] == [e.text for e in expected.evidence]
    assert actual.vector == pytest.approx(expected.vector)


def test_the_context_vector_follows_the_catalog_layout(real_store: ProfileStore) -> None:
    _log(real_store, "alice", FORMAL, days_ago=1)
    context = real_store.preferences("alice")
    layout = real_store.catalog.vector_layout()
    assert len(context.vector) == len(layout) == 9
    values = dict(zip(layout, context.vector, strict=True))
    tone = context.dimensions["tone"]
    assert values["tone.formal"] == pytest.approx(tone.weights["formal"] * tone.confidence)
    assert values["tone.confidence"] == pytest.approx(tone.confidence)
    for dimension in context.dimensions.values():
        assert sum(dimension.weights.values()) == pytest.approx(1.0)
        assert 0.0 <= dimension.confidence <= 1.0


def test_a_user_defined_dimension_is_inferred(db_url: str, tmp_path: Path, minilm: SentenceTransformerEmbedder) -> None:
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text(
        """
[[dimensions]]
name = "humour"
[[dimensions.poles]]
name = "serious"
description = "A serious, matter-of-fact answer without jokes."
examples = ["No jokes please, this is important.", "Keep it serious and factual."]
[[dimensions.poles]]
name = "playful"
description = "A light, playful and funny answer."
examples = ["Make it funny!", "Tell it like a pirate, with jokes", "lol give me something silly"]
""",
        encoding="utf-8",
    )
    catalog = PreferenceCatalog.from_file(catalog_file)
    with ProfileStore(db_url, embedder=minilm, catalog=catalog) as store:
        _log(
            store,
            "fun",
            ["Make it funny please, add a joke!", "tell it like a pirate lol", "can you make this silly and playful?"],
            days_ago=0,
        )
        context = store.preferences("fun")
        assert context.dimensions["humour"].top_pole == "playful"
        assert len(context.vector) == len(catalog.vector_layout()) == 12
        store.set_preference("fun", "humour", "serious")
        assert store.preferences("fun").dimensions["humour"].source == "explicit"
