"""A zero-shot preference reward: how close the response so far is, in meaning, to a description of the preference.

Nobody has to train a model for a new preference ("answer like a pirate"): the reward of a candidate is the cosine
similarity between the sentence embedding of (response so far + candidate token) and the embedding of the pole's
natural-language description, computed once. This is PAD's point that a preference-conditioned reward generalises
to preferences unseen in training, in its simplest form.

It is a text reward, so it is slower than a head: every step decodes the B*k candidate texts and embeds them (in one
``encode`` call). Cosine similarities of a sentence embedder sit in a narrow band, so calibrate on a few reference
texts (``calibrated_on``) before mixing it with other rewards.

The embedder is the profile store's (``profiles.embedders``): the default all-MiniLM-L6-v2 from the packaged copy, a
model path, ``"hashing"``, an ``Embedder`` or any ``encode(list[str]) -> array`` callable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from panda_chat.rewards.base import Calibration, CandidateBatch, PromptBatch, RewardSession, RewardSource
from panda_chat.rewards.calibration import calibrate
from panda_chat.rewards.text_reward_model import score_candidate_texts
from profiles.embedders import EmbedderSpec, encode_normalised, resolve_embedder


class ZeroShotReward(RewardSource):
    """reward(text) = cos(embed(text), embed(description)) for the response so far plus each candidate token."""

    needs_base_hidden = False

    def __init__(
        self, description: str, name: str, embedder: EmbedderSpec = None, calibration: Calibration | None = None
    ):
        if not description.strip():
            raise ValueError(f"zero-shot reward '{name}' needs a non-empty description")
        self.name = name
        self.description = description
        self.embedder = resolve_embedder(embedder)
        self.calibration = calibration or Calibration()
        self._target = encode_normalised(self.embedder, [description])[0]

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Raw rewards (cosine similarities in [-1, 1]) of whole texts, shape (N,)."""
        return encode_normalised(self.embedder, list(texts)) @ self._target

    def calibrated_on(self, reference_texts: Sequence[str]) -> ZeroShotReward:
        """Set the calibration to the mean/std of this reward over ``reference_texts``; returns self."""
        self.calibration = calibrate(torch.from_numpy(self.score_texts(reference_texts)))
        return self

    def start(self, prompts: PromptBatch) -> RewardSession:
        return _ZeroShotSession(self, prompts.tokenizer)


class _ZeroShotSession(RewardSession):
    can_select_rows = True

    def __init__(self, source: ZeroShotReward, tokenizer):
        self.source = source
        self.tokenizer = tokenizer

    def select_rows(self, rows: torch.Tensor) -> None:
        """Stateless: every step's candidates carry their own rows' generated tokens."""

    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        # one encode call for all active rows' candidates
        return score_candidate_texts(self.tokenizer, candidates, lambda rows, texts: self.source.score_texts(texts))
