"""Reward signals for PANDA: reward-model wrappers, shared-backbone heads, calibration and training."""

from panda_chat.rewards.base import CandidateBatch, Calibration, PromptBatch, RewardSession, RewardSource

from panda_chat.rewards.loading import TokenizerMismatchError, load_reward, load_rewards  # noqa: E402
from panda_chat.rewards.reward_model import CachedRewardModel  # noqa: E402

__all__ = [
    "CachedRewardModel",
    "CandidateBatch",
    "Calibration",
    "PromptBatch",
    "RewardSession",
    "RewardSource",
    "TokenizerMismatchError",
    "load_reward",
    "load_rewards",
]
