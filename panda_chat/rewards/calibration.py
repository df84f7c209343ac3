"""Calibration: measuring a reward's scale, and storing it next to a full reward model.

Rewards from different models live on different scales, so PANDA combines ``w_j * (r_j - mean_j) / std_j`` (clipped
at +-2 when steering, ``panda_chat.decoding.steering``). The
mean and std are measured once, when a reward is trained, over the rewards of all its training responses
(``calibrate``). A reward head keeps them in its own file's config; a fine-tuned ``AutoModelForSequenceClassification``
folder keeps them in ``panda_reward.json`` (``RewardModelInfo``) beside its weights, which the reward-model loader
reads when it loads the folder. A folder without that file (any third-party RM) gets the identity calibration.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, Field

from panda_chat.rewards.base import Calibration

REWARD_INFO_FILE = "panda_reward.json"
_MIN_STD = 1e-6


def calibrate(rewards: torch.Tensor) -> Calibration:
    """Mean and (population) std of raw rewards; a constant reward gets std 1 so normalising never divides by ~0."""
    values = rewards.detach().float().flatten()
    if values.numel() == 0:
        return Calibration()
    std = float(values.std(unbiased=False)) if values.numel() > 1 else 0.0
    return Calibration(mean=float(values.mean()), std=std if std > _MIN_STD else 1.0)


class RewardModelInfo(BaseModel):
    """What panda-chat stores beside a reward-model folder it trained (``panda_reward.json``)."""

    name: str = ""
    description: str = ""
    base_model: str = ""
    calibration: Calibration = Field(default_factory=Calibration)
    training: dict = Field(default_factory=dict)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / REWARD_INFO_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> RewardModelInfo | None:
        """The folder's info, or None when the folder has no ``panda_reward.json`` (a third-party reward model)."""
        path = Path(folder) / REWARD_INFO_FILE
        if not path.is_file():
            return None
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
