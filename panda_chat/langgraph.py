"""``PandaStore``: LangGraph's long-term memory (``BaseStore``) over the profile store, so an app's memories and the
profile that steers ChatPanda are one.

Namespaces are per user and of two kinds:

- ``("users", user_id, "preferences")``: the user's explicit preference settings, one item per catalog dimension,
  ``{"pole": "expert"}``. Writing one is ``panda-chat profile set``; deleting it goes back to inference.
- ``("users", user_id, "memories")``: free-text memories, ``{"text": "..."}``. Each is stored as one of the user's
  own messages (in a conversation keyed ``memory:<key>``), so it is embedded, searchable with the store's user-scoped
  retrieval (``search(..., query=...)``), and read by preference inference like anything the user said.

Every read and search is scoped to the one user of its namespace; a user's memories go when the user is forgotten.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from panda_chat.chat_model.profile_view import open_profile_store
from profiles import ProfileStore, validate_user_id

PREFERENCES = "preferences"
MEMORIES = "memories"
_MEMORY_KEY = "memory:"


class PandaStore(BaseStore):
    """A LangGraph ``BaseStore`` over a ``ProfileStore`` (or its URL / path; None: the default database)."""

    supports_ttl = False

    def __init__(self, store: ProfileStore | str | os.PathLike[str] | None = None):
        self.profiles: ProfileStore = open_profile_store(store).store

    # ------------------------------------------------------------------------------------------------ BaseStore

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._run(op) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def _run(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            user, kind = _parse(op.namespace)
            return self._get(user, kind, op.key)
        if isinstance(op, PutOp):
            user, kind = _parse(op.namespace)
            self._put(user, kind, op.key, op.value)
            return None
        if isinstance(op, SearchOp):
            return self._search(op)
        if isinstance(op, ListNamespacesOp):
            return self._namespaces(op)
        raise TypeError(f"PandaStore cannot run a {type(op).__name__}")

    # -------------------------------------------------------------------------------------------------- items

    def _get(self, user: str, kind: str, key: str) -> Item | None:
        if not self.profiles.has_user(user):
            return None
        if kind == PREFERENCES:
            pole = self.profiles.explicit_preferences(user).get(key)
            return None if pole is None else _item((("pole", pole),), user, kind, key)
        conversation = self.profiles.conversation_for_key(user, _MEMORY_KEY + key, create=False)
        if conversation is None:
            return None
        messages = self.profiles.conversation_messages(conversation)
        if not messages:
            return None
        return _item((("text", messages[-1].text),), user, kind, key, messages[-1].created_at)

    def _put(self, user: str, kind: str, key: str, value: Mapping[str, Any] | None) -> None:
        if kind == PREFERENCES:
            if value is None:
                self.profiles.unset_preference(user, key)
                return
            pole = value.get("pole") if isinstance(value, dict) else None
            if not isinstance(pole, str) or set(value) != {"pole"}:
                raise ValueError(f"a preference item is {{'pole': <pole name>}}, got {value!r} for '{key}'")
            self.profiles.set_preference(user, key, pole)
            return
        if value is not None and (
            not isinstance(value, dict)
            or set(value) != {"text"}
            or not isinstance(value["text"], str)
            or not value["text"].strip()
        ):
            raise ValueError(f"a memory item is {{'text': <non-empty text>}}, got {value!r} for '{key}'")
        self.profiles.delete_conversation_key(user, _MEMORY_KEY + key)  # a put replaces the memory
        if value is not None:
            conversation = self.profiles.conversation_for_key(user, _MEMORY_KEY + key)
            self.profiles.add_message(user, "user", value["text"], conversation_id=conversation)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        if len(prefix) < 2 or prefix[0] != "users":
            raise ValueError(f"PandaStore searches one user's namespace, ('users', <user id>[, kind]); got {prefix}")
        user = validate_user_id(prefix[1], where="the namespace's user id")
        kinds = [prefix[2]] if len(prefix) > 2 else [PREFERENCES, MEMORIES]
        if not self.profiles.has_user(user):
            return []
        found: list[SearchItem] = []
        for kind in kinds:
            _parse(("users", user, kind))
            found.extend(self._search_kind(user, kind, op))
        found = [item for item in found if _matches(item.value, op.filter)]
        return found[op.offset : op.offset + op.limit]

    def _search_kind(self, user: str, kind: str, op: SearchOp) -> list[SearchItem]:
        namespace = ("users", user, kind)
        if kind == PREFERENCES:
            return [
                SearchItem(namespace, dimension, {"pole": pole}, *_now_pair())
                for dimension, pole in sorted(self.profiles.explicit_preferences(user).items())
            ]
        keys = self.profiles.conversation_keys(user, _MEMORY_KEY)
        if op.query:
            wanted = (op.offset + op.limit) * 4 + 8
            hits = self.profiles.search(user, op.query, k=wanted)
            return [
                SearchItem(
                    namespace,
                    keys[hit.conversation_id][len(_MEMORY_KEY) :],
                    {"text": hit.text},
                    hit.created_at,
                    hit.created_at,
                    score=hit.score,
                )
                for hit in hits
                if hit.conversation_id in keys
            ]
        items = []
        for conversation, key in sorted(keys.items()):
            messages = self.profiles.conversation_messages(conversation)
            if messages:
                items.append(
                    SearchItem(
                        namespace,
                        key[len(_MEMORY_KEY) :],
                        {"text": messages[-1].text},
                        messages[-1].created_at,
                        messages[-1].created_at,
                    )
                )
        return items

    def _namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        spaces: list[tuple[str, ...]] = [
            ("users", summary.user_id, kind)
            for summary in self.profiles.list_users()
            for kind in (PREFERENCES, MEMORIES)
        ]
        for condition in op.match_conditions or ():
            size = len(condition.path)
            if condition.match_type == "prefix":
                spaces = [s for s in spaces if _path_match(s[:size], condition.path)]
            else:
                spaces = [s for s in spaces if _path_match(s[-size:], condition.path)]
        if op.max_depth is not None:
            spaces = sorted({s[: op.max_depth] for s in spaces})
        return spaces[op.offset : op.offset + op.limit]


def _parse(namespace: tuple[str, ...]) -> tuple[str, str]:
    """(user id, kind) of a namespace, or a clear error."""
    if len(namespace) != 3 or namespace[0] != "users" or namespace[2] not in (PREFERENCES, MEMORIES):
        raise ValueError(
            f"PandaStore namespaces are ('users', <user id>, 'preferences' | 'memories'); got {tuple(namespace)}"
        )
    return validate_user_id(namespace[1], where="the namespace's user id"), namespace[2]


def _now_pair() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now, now


def _item(value: tuple[tuple[str, Any], ...], user: str, kind: str, key: str, at: datetime | None = None) -> Item:
    when = at or datetime.now(UTC)
    return Item(value=dict(value), key=key, namespace=("users", user, kind), created_at=when, updated_at=when)


def _matches(value: dict[str, Any], condition: dict[str, Any] | None) -> bool:
    return all(value.get(name) == expected for name, expected in (condition or {}).items())


def _path_match(actual: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    return len(actual) == len(pattern) and all(p == "*" or a == p for a, p in zip(actual, pattern, strict=True))
