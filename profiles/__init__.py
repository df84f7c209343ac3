"""The profile store: each user's conversation history, and the preferences inferred from it.

    from profiles import ProfileStore
    store = ProfileStore("sqlite:///profiles.db")          # ProfileStore() = the default location
    store.add_message("alice", "user", "Explain it simply, please.")
    store.search("alice", "how do magnets work", k=5)       # alice's most similar past messages
    store.preferences("alice", query="how do magnets work")  # -> PreferenceContext

Independent of the decoding engine: nothing here imports ``panda_chat``.

The names below load on first use (module ``__getattr__``), so ``import profiles.ids`` or ``profiles.errors`` does
not pull in SQLAlchemy, Alembic and faiss, and the command line's ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Exported name -> the submodule that defines it. The one list of the package's public names.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["Dimension", "Pole", "PreferenceCatalog", "RewardSpec"], "profiles.catalog"),
    **dict.fromkeys(["DimensionPreference", "Evidence", "PreferenceContext"], "profiles.context"),
    **dict.fromkeys(
        ["CallableEmbedder", "Embedder", "HashingEmbedder", "SentenceTransformerEmbedder", "resolve_embedder"],
        "profiles.embedders",
    ),
    **dict.fromkeys(
        [
            "CatalogError",
            "EmbedderError",
            "ImportFormatError",
            "InvalidInputError",
            "ProfileError",
            "SchemaTooNewError",
            "UnknownDimensionError",
            "UnknownPoleError",
            "UnknownUserError",
            "UserExistsError",
            "ForgetIncompleteError",
            "UserForgottenError",
        ],
        "profiles.errors",
    ),
    **dict.fromkeys(["MAX_USER_ID_LENGTH", "InvalidUserIdError", "validate_user_id"], "profiles.ids"),
    **dict.fromkeys(["HistoryLine", "ProfileExport", "parse_export", "parse_history"], "profiles.exchange"),
    **dict.fromkeys(["InferenceSettings", "PreferenceInference"], "profiles.inference"),
    **dict.fromkeys(
        ["FeedbackPair", "ForgetReport", "SearchHit", "StoredMessage", "StoredRewardHead", "UserSummary"],
        "profiles.records",
    ),
    "ProfileStore": "profiles.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access, then cache the name on the package."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'profiles' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what type checkers and IDEs see; keep in step with _EXPORTS (tests/test_import_cost.py checks)
    from profiles.catalog import Dimension, Pole, PreferenceCatalog, RewardSpec
    from profiles.context import DimensionPreference, Evidence, PreferenceContext
    from profiles.embedders import (
        CallableEmbedder,
        Embedder,
        HashingEmbedder,
        SentenceTransformerEmbedder,
        resolve_embedder,
    )
    from profiles.errors import (
        CatalogError,
        EmbedderError,
        ForgetIncompleteError,
        ImportFormatError,
        InvalidInputError,
        ProfileError,
        SchemaTooNewError,
        UnknownDimensionError,
        UnknownPoleError,
        UnknownUserError,
        UserExistsError,
        UserForgottenError,
    )
    from profiles.exchange import HistoryLine, ProfileExport, parse_export, parse_history
    from profiles.ids import MAX_USER_ID_LENGTH, InvalidUserIdError, validate_user_id
    from profiles.inference import InferenceSettings, PreferenceInference
    from profiles.records import (
        FeedbackPair,
        ForgetReport,
        SearchHit,
        StoredMessage,
        StoredRewardHead,
        UserSummary,
    )
    from profiles.store import ProfileStore
