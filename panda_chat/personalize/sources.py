"""The reward source of each catalog pole, for one base model, built once and reused by every call.

A pole's ``reward`` in the catalog says what should score text for it: a reward head file, a reward-model folder, or
the zero-shot embedding reward over the pole's description. A head or reward model is tied to one base model (a
head trained on another model is refused by the head loader; a reward model with another tokenizer too), so when the
configured reward does not fit the model being decoded, the pole falls back to its zero-shot reward, and when even
that cannot be built (no embedder available), the pole is not steered at all. Each outcome is recorded on the
``PoleReward`` (``kind``, ``note``) so ``response_metadata`` and ``/why`` can say which reward steered the answer,
and the fallback is warned about once per pole and model, never raised: a chat must answer.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Literal

from panda_chat.registry import ModelRegistry, shared_registry
from panda_chat.rewards.base import RewardSource
from panda_chat.rewards.heads import HeadReward, HeadStack, RewardHead
from panda_chat.rewards.loading import load_reward
from panda_chat.rewards.zero_shot import ZeroShotReward
from profiles.catalog import Dimension, Pole, PreferenceCatalog
from profiles.embedders import EmbedderSpec

RewardKind = Literal["head", "model", "zero_shot", "user_head", "none"]


@dataclass(frozen=True)
class PoleReward:
    """What scores one pole on this base model: ``source`` (None when nothing could), its kind and why."""

    name: str  # "dimension.pole", the reward's name in the decoder
    source: RewardSource | None
    kind: RewardKind
    configured: str  # the catalog's kind for the pole
    note: str | None = None  # why the configured reward was not used, when it was not


def reward_name(dimension: str, pole: str) -> str:
    return f"{dimension}.{pole}"


def calibration_texts(catalog: PreferenceCatalog) -> list[str]:
    """Reference texts for zero-shot calibration: every pole's description and examples (all dimensions)."""
    return [text for dim in catalog.dimensions for pole in dim.poles for text in (pole.description, *pole.examples)]


class PoleRewards:
    """Builds and caches ``PoleReward``s for one base model (its decoder's model and tokenizer). Thread-safe."""

    def __init__(self, model, tokenizer, embedder: EmbedderSpec = None, registry: ModelRegistry | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.embedder = embedder
        self.registry = registry or shared_registry()
        self._lock = threading.Lock()
        self._built: dict[tuple, PoleReward] = {}
        # every head-scored pole of this model joins one stack: a step scores all of them in one computation
        self.heads = HeadStack()

    def get(self, catalog: PreferenceCatalog, dimension: Dimension, pole: Pole) -> PoleReward:
        key = (dimension.name, pole.name, pole.reward.kind, pole.reward.path, pole.description)
        with self._lock:
            if key not in self._built:
                self._built[key] = self._build(catalog, dimension, pole)
            return self._built[key]

    def _build(self, catalog: PreferenceCatalog, dimension: Dimension, pole: Pole) -> PoleReward:
        name = reward_name(dimension.name, pole.name)
        configured = pole.reward.kind
        note = None
        if configured in ("head", "model") and pole.reward.path is not None:  # the catalog requires a path for both
            try:
                source = load_reward(name, pole.reward.path, self.model, self.tokenizer, self.registry)
                if isinstance(source, HeadReward):
                    source = self.heads.add(source.head, name)
                return PoleReward(name, source, configured, configured)
            except (OSError, ValueError, RuntimeError) as error:
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                note = f"the {configured} reward at {pole.reward.path} does not fit this model ({first_line})"
        try:
            source = ZeroShotReward(pole.description, name=name, embedder=self.embedder)
            source.calibrated_on(calibration_texts(catalog))
        except Exception as error:  # noqa: BLE001 - an embedder that cannot load (no packaged model, no hub): steer nothing
            reason = f"the zero-shot reward could not be built ({type(error).__name__}: {error})"
            note = f"{note}; {reason}" if note else reason
            warnings.warn(f"pole '{name}' will not be steered: {note}", RuntimeWarning, stacklevel=3)
            return PoleReward(name, None, "none", configured, note)
        if note:
            warnings.warn(f"pole '{name}' falls back to its zero-shot reward: {note}", RuntimeWarning, stacklevel=3)
        return PoleReward(name, source, "zero_shot", configured, note)


# A user's own head steers with weight pairs / (pairs + USER_HEAD_PAIRS_FOR_HALF): a head trained on a handful of
# feedback pairs nudges, one trained on many steers as strongly as a confident catalog pole (weight -> 1).
USER_HEAD_PAIRS_FOR_HALF = 8


@dataclass(frozen=True)
class UserHeadReward:
    """One of a user's stored reward heads (learned from their feedback) that fits this base model."""

    name: str  # the reward's name in the decoder: unique per user, so rows of several users never collide
    head_name: str
    source: RewardSource
    pairs: int  # the feedback pairs it was trained on
    weight: float


def user_reward_name(user_id: str, head_name: str) -> str:
    """The decoder's name for one user's head: ``user:USER:HEAD``, with ``\\`` and ``:`` escaped in both parts.

    One decode call keys its rewards by name (several users' rows in one batched call), so two users' heads must
    never get one name: unescaped, user ``a`` with head ``b:c`` and user ``a:b`` with head ``c`` would both be
    ``user:a:b:c``, and one of them would be steered by the other's head."""

    def escape(part: str) -> str:
        return part.replace("\\", "\\\\").replace(":", "\\:")

    return f"user:{escape(user_id)}:{escape(head_name)}"


def user_head_rewards(user_id: str, stored, model) -> tuple[list[UserHeadReward], list[str]]:
    """The user's stored heads (``ProfileStore.reward_heads``) that fit ``model``, weighted by how much feedback
    trained them; plus a note for each head that does not fit (trained on another base model, or unreadable)."""
    rewards, notes = [], []
    for item in stored:
        meta = dict(item.meta or {})
        if meta.get("kind", "head") != "head":
            continue
        try:
            head = RewardHead.from_bytes(item.data)
            head.check_base(model)
        except (ValueError, OSError, RuntimeError) as error:
            notes.append(f"user head '{item.name}' not used: {str(error).splitlines()[0] if str(error) else error}")
            continue
        pairs = int(meta.get("train_pairs") or 0) + int(meta.get("val_pairs") or 0)
        name = user_reward_name(user_id, item.name)
        rewards.append(
            UserHeadReward(
                name=name,
                head_name=item.name,
                source=HeadReward(head, name=name),
                pairs=pairs,
                weight=pairs / (pairs + USER_HEAD_PAIRS_FOR_HALF),
            )
        )
    return rewards, notes
