"""ChatPanda's view of the profile store: read a user's preferences, record their turns without duplicates.

Stores are opened once per URL per process and shared (like model weights), so many ChatPanda objects pointing at
one database share one engine and one embedder.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from panda_chat.chat_model.messages import message_text
from panda_chat.chat_model.recording import RECORDED_ROLES, new_turns
from panda_chat.personalize import UserHeadReward, user_head_rewards
from profiles import PreferenceCatalog, PreferenceContext, ProfileStore
from profiles.database import default_url, normalise_url

_stores: dict[str, ProfileStore] = {}
_stores_lock = threading.Lock()


def open_profile_store(spec: ProfileStore | str | os.PathLike[str] | None) -> ProfileAccess:
    """A ``ProfileStore`` as given, or the shared store of a URL / path (None: the default database)."""
    if isinstance(spec, ProfileStore):
        return ProfileAccess(spec)
    url = normalise_url(spec) if spec is not None else default_url()
    with _stores_lock:
        if url not in _stores:
            _stores[url] = ProfileStore(url)
        return ProfileAccess(_stores[url])


def conversation_key(conversation_id: str | int) -> int:
    """Conversation ids are the store's integer ids (``response_metadata["conversation_id"]`` of an answer)."""
    try:
        return int(conversation_id)
    except (TypeError, ValueError):
        raise ValueError(
            f"conversation_id must be a profile-store conversation id (an integer), got {conversation_id!r}; "
            "leave it out to start a new conversation and reuse the id from response_metadata['conversation_id']"
        ) from None


class ProfileAccess:
    """The few store operations a chat call needs."""

    def __init__(self, store: ProfileStore):
        self.store = store

    @property
    def catalog(self) -> PreferenceCatalog:
        return self.store.catalog

    @property
    def embedder(self):
        return self.store.embedder

    def preferences(self, user_id: str, query: str | None) -> PreferenceContext:
        return self.store.preferences(user_id, query=query)

    def user_heads(self, user_id: str, model) -> list[UserHeadReward]:
        """The user's own reward heads (trained on their feedback) that fit ``model``; a head for another base
        model is skipped with a warning, never an error: a chat must answer."""
        rewards, notes = user_head_rewards(user_id, self.store.reward_heads(user_id), model)
        for note in notes:
            warnings.warn(note, RuntimeWarning, stacklevel=3)
        return rewards

    def neutral(self, user_id: str, query: str | None) -> PreferenceContext:
        return PreferenceContext.neutral(self.catalog, user_id, query)

    def record_incoming(self, user_id: str, conversation_id: str | int | None,
                        messages: Sequence[BaseMessage]) -> int:
        """Store the turns of ``messages`` the conversation lacks (see ``recording``); returns the conversation id
        (a new conversation when none was given)."""
        if conversation_id is None:
            conversation = self.store.new_conversation(user_id)
            stored: list[tuple[str, str]] = []
        else:
            conversation = conversation_key(conversation_id)
            stored = [(m.role, m.text) for m in self.store.conversation_messages(conversation)
                      if m.role in RECORDED_ROLES]
        incoming = []
        for message in messages:
            if isinstance(message, (HumanMessage, AIMessage)):
                text = message_text(message)
                if text.strip():
                    incoming.append(("user" if isinstance(message, HumanMessage) else "assistant", text))
        turns = new_turns(stored, incoming)
        if turns:
            self.store.add_messages(user_id, [(role, text, None) for role, text in turns],
                                    conversation_id=conversation)
        return conversation

    def record_answer(self, user_id: str, conversation_id: str | int, text: str) -> None:
        if text.strip():
            self.store.add_message(user_id, "assistant", text, conversation_id=conversation_key(conversation_id))
