"""Reward signals for PANDA: reward-model wrappers, shared-backbone heads, calibration and training."""

from panda_chat.rewards.base import CandidateBatch, Calibration, PromptBatch, RewardSession, RewardSource

__all__ = ["CandidateBatch", "Calibration", "PromptBatch", "RewardSession", "RewardSource"]
