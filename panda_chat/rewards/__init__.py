"""Reward signals for PANDA: reward-model wrappers, shared-backbone heads, calibration and training.

The names below load lazily (on first use), so that ``panda_chat.decoding``, which needs only the interface in
``panda_chat.rewards.base``, does not import training code or the profile store's embedder
(docs/ARCHITECTURE.md, "Layers").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from panda_chat.rewards.base import Calibration, CandidateBatch, PromptBatch, RewardSession, RewardSource

_LAZY_EXPORTS = {
    "CachedRewardModel": "panda_chat.rewards.reward_model",
    "load_reward": "panda_chat.rewards.loading",
    "load_rewards": "panda_chat.rewards.loading",
    "RewardModelInfo": "panda_chat.rewards.calibration",
    "calibrate": "panda_chat.rewards.calibration",
    "PairDataError": "panda_chat.rewards.data",
    "PreferencePair": "panda_chat.rewards.data",
    "load_pairs": "panda_chat.rewards.data",
    "TextRewardModel": "panda_chat.rewards.text_reward_model",
    "PairwiseRewardTrainer": "panda_chat.rewards.training",
    "RewardTrainingConfig": "panda_chat.rewards.training",
    "RewardTrainingReport": "panda_chat.rewards.training",
    "TrainedRewardHead": "panda_chat.rewards.training",
    "train_reward_head": "panda_chat.rewards.training",
    "train_reward_model": "panda_chat.rewards.training",
    "train_user_reward_head": "panda_chat.rewards.training",
    "ZeroShotReward": "panda_chat.rewards.zero_shot",
    "bootstrap_heads": "panda_chat.rewards.bootstrap",
    "HeadsManifest": "panda_chat.rewards.manifest",
    "PrefixFeaturizer": "panda_chat.rewards.token_level",
    "train_token_reward_head": "panda_chat.rewards.token_level",
}

__all__ = ["CandidateBatch", "Calibration", "PromptBatch", "RewardSession", "RewardSource", *_LAZY_EXPORTS]

if TYPE_CHECKING:
    from panda_chat.rewards.bootstrap import bootstrap_heads
    from panda_chat.rewards.calibration import RewardModelInfo, calibrate
    from panda_chat.rewards.data import PairDataError, PreferencePair, load_pairs
    from panda_chat.rewards.loading import load_reward, load_rewards
    from panda_chat.rewards.manifest import HeadsManifest
    from panda_chat.rewards.reward_model import CachedRewardModel
    from panda_chat.rewards.text_reward_model import TextRewardModel
    from panda_chat.rewards.token_level import PrefixFeaturizer, train_token_reward_head
    from panda_chat.rewards.training import (
        PairwiseRewardTrainer,
        RewardTrainingConfig,
        RewardTrainingReport,
        TrainedRewardHead,
        train_reward_head,
        train_reward_model,
        train_user_reward_head,
    )
    from panda_chat.rewards.zero_shot import ZeroShotReward


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'panda_chat.rewards' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
