"""Scoring finished answers with the demo reward heads, to show what steering did to each answer.

The decoder reports the reward of every chosen token; a person comparing answers wants one number per answer and
pole. ``DemoRewardScorer`` reads the head at the answer's last token (exactly the feature the heads were trained on)
and puts it on the head's calibrated scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from panda_chat.rewards.features import ResponseFeaturizer
from panda_chat.rewards.heads import RewardHead


class DemoRewardScorer:
    """Calibrated reward of (prompt, answer) under each demo head."""

    def __init__(self, model_dir: str | Path, head_paths: Mapping[str, Path], model=None, tokenizer=None):
        model = model if model is not None else AutoModelForCausalLM.from_pretrained(model_dir).eval()
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_dir)
        self.featurizer = ResponseFeaturizer(model, tokenizer)
        self.heads = {pole: RewardHead.load(path) for pole, path in head_paths.items()}
        for head in self.heads.values():
            head.check_base(model)

    @property
    def poles(self) -> list[str]:
        return list(self.heads)

    def score_many(self, prompts: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
        """Pole -> (N,) calibrated rewards of each (prompt, answer)."""
        features = self.featurizer(prompts, [a if a else " " for a in answers])
        with torch.no_grad():
            return {pole: head.config.calibration.normalise(head(features)) for pole, head in self.heads.items()}

    def score(self, prompt: str, answer: str) -> dict[str, float]:
        return {pole: float(r[0]) for pole, r in self.score_many([prompt], [answer]).items()}
