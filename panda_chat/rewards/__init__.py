"""Reward signals for PANDA: reward-model wrappers, shared-backbone heads, calibration and training."""

from panda_chat.rewards.base import CandidateBatch, Calibration, PromptBatch, RewardSession, RewardSource

from panda_chat.rewards.loading import TokenizerMismatchError, load_reward, load_rewards  # noqa: E402
from panda_chat.rewards.reward_model import CachedRewardModel  # noqa: E402
from panda_chat.rewards.calibration import RewardModelInfo, calibrate  # noqa: E402
from panda_chat.rewards.data import PairDataError, PreferencePair, load_pairs  # noqa: E402
from panda_chat.rewards.text_reward_model import TextRewardModel  # noqa: E402
from panda_chat.rewards.training import (  # noqa: E402
    PairwiseRewardTrainer,
    RewardTrainingConfig,
    RewardTrainingReport,
    TrainedRewardHead,
    train_reward_head,
    train_reward_model,
    train_user_reward_head,
)
from panda_chat.rewards.zero_shot import ZeroShotReward  # noqa: E402

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
    "PairDataError",
    "PairwiseRewardTrainer",
    "PreferencePair",
    "RewardModelInfo",
    "RewardTrainingConfig",
    "RewardTrainingReport",
    "TextRewardModel",
    "TrainedRewardHead",
    "ZeroShotReward",
    "calibrate",
    "load_pairs",
    "train_reward_head",
    "train_reward_model",
    "train_user_reward_head",
]
