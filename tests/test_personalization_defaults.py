"""Personalisation on the path users take: ChatPanda with its defaults (``record=True``) steers a user with history.

The turn being answered is recorded before the profile is read; it must not drown the user's history (it would
match itself with cosine 1 and the topic weighting would cut every past message to ~1e-4).
"""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage

from panda_chat.chat_model import ChatPanda
from panda_chat.cli.demo import DEMO_HISTORIES
from profiles import ProfileStore, SentenceTransformerEmbedder

QUESTION = "What's important about making a vinaigrette?"


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(num_threads=1)


@pytest.fixture
def store(tmp_path, minilm):
    with ProfileStore(tmp_path / "p.db", embedder=minilm) as opened:
        opened.add_messages("ana", [("user", text, None) for text in DEMO_HISTORIES["ana"]])
        yield opened


def test_default_chat_panda_steers_a_user_with_history(store):
    llm = ChatPanda(store=store, user_id="ana", max_tokens=24, device="cpu")  # record=True: the default
    answer = llm.invoke([HumanMessage(QUESTION)])
    personalization = answer.response_metadata["personalization"]
    assert personalization["mode"] == "steered"
    tops = {name: dim["top_pole"] for name, dim in personalization["dimensions"].items()}
    assert tops == {"expertise": "elementary", "verbosity": "detailed", "tone": "formal"}
    # the question was recorded, and is not what the preferences were inferred from
    assert next(m.text for m in store.conversation_messages(answer.response_metadata["conversation_id"])) == QUESTION
    new_user = ChatPanda(store=store, user_id="nobody", max_tokens=24, device="cpu").invoke([HumanMessage(QUESTION)])
    assert new_user.response_metadata["personalization"]["mode"] == "neutral"
    assert answer.content != new_user.content


def test_recording_the_turn_gives_the_same_preferences_as_not_recording_it(store):
    recorded = ChatPanda(store=store, user_id="ana", max_tokens=4, device="cpu").invoke(QUESTION)
    quiet = ChatPanda(store=store, user_id="ana", max_tokens=4, device="cpu", record=False).invoke(QUESTION)
    dims = [m.response_metadata["personalization"]["dimensions"] for m in (recorded, quiet)]
    for name in dims[0]:
        assert dims[0][name]["top_pole"] == dims[1][name]["top_pole"]
        assert dims[0][name]["confidence"] == pytest.approx(dims[1][name]["confidence"], abs=0.02)
