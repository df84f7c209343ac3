"""The profile store: each user's conversation history, and the preferences inferred from it.

    from profiles import ProfileStore
    store = ProfileStore("sqlite:///profiles.db")          # ProfileStore() = the default location
    store.add_message("alice", "user", "Explain it simply, please.")
    store.search("alice", "how do magnets work", k=5)       # alice's most similar past messages
    store.preferences("alice", query="how do magnets work")  # -> PreferenceContext

Independent of the decoding engine: nothing here imports ``panda_chat``.
"""

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
from profiles.ids import MAX_USER_ID_LENGTH, InvalidUserIdError, validate_user_id
from profiles.exchange import HistoryLine, ProfileExport, parse_export, parse_history
from profiles.inference import InferenceSettings, PreferenceInference
from profiles.store import (
    FeedbackPair,
    ForgetReport,
    ProfileStore,
    SearchHit,
    StoredMessage,
    StoredRewardHead,
    UserSummary,
)

__all__ = [
    "InvalidUserIdError",
    "MAX_USER_ID_LENGTH",
    "validate_user_id",
    "CallableEmbedder",
    "CatalogError",
    "Dimension",
    "DimensionPreference",
    "Embedder",
    "EmbedderError",
    "ForgetIncompleteError",
    "UserForgottenError",
    "Evidence",
    "FeedbackPair",
    "ForgetReport",
    "HashingEmbedder",
    "HistoryLine",
    "ImportFormatError",
    "InferenceSettings",
    "InvalidInputError",
    "Pole",
    "PreferenceCatalog",
    "PreferenceContext",
    "PreferenceInference",
    "ProfileError",
    "ProfileExport",
    "ProfileStore",
    "RewardSpec",
    "SchemaTooNewError",
    "SearchHit",
    "SentenceTransformerEmbedder",
    "StoredMessage",
    "StoredRewardHead",
    "UnknownDimensionError",
    "UnknownPoleError",
    "UnknownUserError",
    "UserExistsError",
    "UserSummary",
    "parse_export",
    "parse_history",
    "resolve_embedder",
]
