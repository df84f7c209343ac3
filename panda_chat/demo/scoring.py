"""Scoring finished answers with the demo reward heads, to show what steering did to each answer.

The decoder reports the reward of every chosen token; a person comparing answers wants one number per answer and
pole. ``DemoRewardScorer`` reads the head on the complete answer (exactly the features the heads were trained on:
the last token's hidden state, and the mean over the answer for ``"last+mean"`` heads) and puts it on the head's
calibrated scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from panda_chat.rewards.features import ResponseFeaturizer
from panda_chat.rewards.heads import HeadFeatures, RewardHead


class DemoRewardScorer:
    """Calibrated reward of (prompt, answer) under each demo head."""

    def __init__(self, model_dir: str | Path, head_paths: Mapping[str, Path], model=None, tokenizer=None):
        model = model if model is not None else AutoModelForCausalLM.from_pretrained(model_dir).eval()
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_dir)
        self.heads = {pole: RewardHead.load(path) for pole, path in head_paths.items()}
        for head in self.heads.values():
            head.check_base(model)
        self.model, self.tokenizer = model, tokenizer
        self._featurizers: dict[HeadFeatures, ResponseFeaturizer] = {}  # per kind of head input (older: last only)

    @property
    def poles(self) -> list[str]:
        return list(self.heads)

    def score_many(self, prompts: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
        """Pole -> (N,) calibrated rewards of each (prompt, answer)."""
        answers = [a if a else " " for a in answers]
        features = {
            kind: self._featurizer(kind)(prompts, answers) for kind in {h.config.features for h in self.heads.values()}
        }
        with torch.no_grad():
            return {
                pole: head.config.calibration.normalise(head(features[head.config.features]))
                for pole, head in self.heads.items()
            }

    def _featurizer(self, kind: HeadFeatures) -> ResponseFeaturizer:
        if kind not in self._featurizers:
            self._featurizers[kind] = ResponseFeaturizer(self.model, self.tokenizer, features=kind)
        return self._featurizers[kind]

    def score(self, prompt: str, answer: str) -> dict[str, float]:
        return {pole: float(r[0]) for pole, r in self.score_many([prompt], [answer]).items()}
