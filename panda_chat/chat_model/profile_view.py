"""ChatPanda's view of the profile store: read a user's preferences, record their turns without duplicates.

Stores are opened once per URL per process and shared (like model weights), so many ChatPanda objects pointing at
one database share one engine and one embedder.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from panda_chat.chat_model.messages import message_text
from panda_chat.chat_model.recording import RECORDED_ROLES, continues, new_turns
from panda_chat.personalize import UserHeadReward, user_head_rewards
from profiles import PreferenceCatalog, PreferenceContext, ProfileStore
from profiles.database import default_url, normalise_url

_stores: dict[str, ProfileStore] = {}
_stores_lock = threading.Lock()


def open_profile_store(spec: ProfileStore | str | os.PathLike[str] | None) -> ChatProfileView:
    """A ``ProfileStore`` as given, or the shared store of a URL / path (None: the default database)."""
    if isinstance(spec, ProfileStore):
        return ChatProfileView(spec)
    url = normalise_url(spec) if spec is not None else default_url()
    with _stores_lock:
        if url not in _stores:
            _stores[url] = ProfileStore(url)
        return ChatProfileView(_stores[url])


class ChatProfileView:
    """ChatPanda's view of one profile store: the few operations a chat call needs (preferences, the user's own heads,
    recording turns without duplicates)."""

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

    def record_incoming(self, user_id: str, conversation_id: str | int | None, messages: Sequence[BaseMessage]) -> int:
        """Store the turns of ``messages`` the conversation lacks (see ``recording``); returns the conversation id.

        ``conversation_id``: the store's integer id, or any string (a LangGraph thread id, a session id) that names
        one conversation of this user. Without one, a history that replays the user's latest conversation continues
        it (an agent loop passing the whole history again); anything else starts a new conversation.
        """
        incoming = []
        for message in messages:
            if isinstance(message, (HumanMessage, AIMessage)):
                text = message_text(message)
                if text.strip():
                    incoming.append(("user" if isinstance(message, HumanMessage) else "assistant", text))
        conversation = self._conversation(user_id, conversation_id, incoming)
        stored = [] if conversation is None else self._stored_turns(user_id, conversation)
        rows = [(role, text, None) for role, text in new_turns(stored, incoming)]
        if conversation is None and rows:  # the new conversation and its turns in one transaction
            return self.store.add_messages(user_id, rows)[0].conversation_id
        if conversation is None:
            return self.store.new_conversation(user_id)
        if rows:
            self.store.add_messages(user_id, rows, conversation_id=conversation)
        return conversation

    def _conversation(
        self, user_id: str, conversation_id: str | int | None, incoming: list[tuple[str, str]]
    ) -> int | None:
        """The stored conversation a call belongs to (None: a new one)."""
        if isinstance(conversation_id, str):
            return self.store.conversation_for_key(user_id, conversation_id)  # made on first use
        if conversation_id is not None:
            if isinstance(conversation_id, bool) or not isinstance(conversation_id, int):
                raise ValueError(
                    f"conversation_id must be a string key or a profile-store conversation id (an integer), got "
                    f"{conversation_id!r}"
                )
            return conversation_id
        if len(incoming) < 2 or not self.store.has_user(user_id):
            return None
        latest = self.store.messages(user_id, limit=1)
        if not latest:
            return None
        candidate = latest[0].conversation_id
        return candidate if continues(self._stored_turns(user_id, candidate), incoming) else None

    def _stored_turns(self, user_id: str, conversation: int) -> list[tuple[str, str]]:
        """The recorded turns of ``conversation``, which must be ``user_id``'s: a conversation id comes from the caller,
        and another user's (or none) is refused before any of its turns is read."""
        messages = self.store.conversation_messages(conversation, user_id=user_id)
        return [(m.role, m.text) for m in messages if m.role in RECORDED_ROLES]

    def version(self, user_id: str) -> str:
        """A short fingerprint of what steers the user's answers: explicit settings, feedback, reward heads and the
        inferred preferences (to two decimals). It changes whenever the profile would steer differently, and not
        when a recorded turn leaves the preferences where they were (so a cache still serves a recording user)."""
        if not self.store.has_user(user_id):
            return "new"
        parts = (
            sorted(self.store.explicit_preferences(user_id).items()),
            len(self.store.feedback_pairs(user_id)),
            sorted(
                (head.name, str(head.created_at), hashlib.sha256(head.data).hexdigest())
                for head in self.store.reward_heads(user_id)
            ),
            [round(value, 2) for value in self.store.preferences(user_id).vector],
        )
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]

    def record_answer(self, user_id: str, conversation_id: int, text: str) -> None:
        if text.strip():
            self.store.add_message(user_id, "assistant", text, conversation_id=conversation_id)
