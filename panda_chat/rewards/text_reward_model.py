"""Rewards scored on decoded *text*: the slow path for reward models that do not share the base model's tokenizer.

A reward model with another tokenizer (an encoder RM such as a DeBERTa classifier, or a decoder RM from another
family) cannot read the base model's token ids, so nothing can be cached across steps. At every step each candidate
continuation is decoded with the base tokenizer (response so far + candidate token), re-tokenised with the reward
model's own tokenizer after the prompt text exactly as the decoder received it (a chat-templated prompt stays as it
is; the RM's tokenizer adds its special tokens as the decoder's rule does), and the B*k texts are scored in
right-padded batches. That is a full forward over prompt + response per candidate per step: correct, but O(k * L)
tokens a step instead of k. ``benchmarks/bench_rewards.py`` measures the gap against the cached same-tokenizer path;
prefer a same-tokenizer RM or a reward head when speed matters.

Re-tokenising the response may merge its bytes into other tokens than the ones generated, so even a same-tokenizer RM
can score differently here than on the cached path; wherever the tokens agree, the rewards agree (tested, and
measured in the benchmark).

``candidate_texts`` and ``score_candidate_texts`` are shared with the other text rewards (the zero-shot embedding
reward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from panda_chat.padding import pad_token_id, right_pad
from panda_chat.positions import readable_length
from panda_chat.prompt_format import encode_prompt, response_ids
from panda_chat.rewards.base import Calibration, CandidateBatch, PromptBatch, RewardSession, RewardSource


def candidate_texts(tokenizer: PreTrainedTokenizerBase, candidates: CandidateBatch) -> list[list[str]]:
    """Per row, the k texts "response so far + candidate token", decoded with the base tokenizer.

    Each text is decoded from the whole id sequence (not prefix text + token text): byte-level tokens may hold
    part of a UTF-8 character, which only decodes correctly together with its neighbours.
    """
    ids = candidates.candidate_ids.tolist()
    sequences = [[*prefix, token] for prefix, row in zip(candidates.generated_ids, ids) for token in row]
    texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
    k = candidates.candidate_ids.shape[1]
    return [texts[row * k : (row + 1) * k] for row in range(len(ids))]


def score_candidate_texts(
    tokenizer: PreTrainedTokenizerBase,
    candidates: CandidateBatch,
    score: Callable[[list[int], list[str]], Sequence[float] | torch.Tensor | np.ndarray],
) -> torch.Tensor:
    """(B, k) rewards of a text reward: every active row's k candidate texts, scored in ONE call.

    ``score(rows, texts)`` gets the flat texts and, for each, the batch row it belongs to; finished rows are neither
    decoded nor scored (their reward is 0, which the decoder ignores).
    """
    batch, k = candidates.candidate_ids.shape
    rows = [b for b in range(batch) if bool(candidates.active[b])]
    scores = torch.zeros(batch, k)
    if rows:
        active = CandidateBatch(
            step=candidates.step,
            candidate_ids=candidates.candidate_ids[rows],
            generated_ids=[candidates.generated_ids[b] for b in rows],
            active=candidates.active[rows],
        )
        texts = [text for row_texts in candidate_texts(tokenizer, active) for text in row_texts]
        flat = score([b for b in rows for _ in range(k)], texts)
        scores[rows] = torch.as_tensor(flat, dtype=torch.float32).view(len(rows), k)
    return scores.to(candidates.candidate_ids.device)


class TextRewardModel(RewardSource):
    """Any one-label ``AutoModelForSequenceClassification`` with its own tokenizer, scored on decoded text."""

    needs_base_hidden = False

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str,
        calibration: Calibration | None = None,
        batch_size: int = 64,
        max_length: int = 1024,
    ):
        if model.config.num_labels != 1:
            raise ValueError(
                f"reward '{name}': a reward model must output one scalar, this one has "
                f"num_labels={model.config.num_labels}"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.calibration = calibration or Calibration()
        self.batch_size = batch_size
        self.max_length = readable_length(model, max_length)  # a model with learned positions reads no further
        self.pad_id = pad_token_id(tokenizer)
        if model.config.pad_token_id is None:
            # Decoder classifiers pool at the last token that is not padding; they need to know the pad id to find it
            # in a right-padded batch (encoder classifiers pool at position 0 and ignore it).
            model.config.pad_token_id = self.pad_id

    def start(self, prompts: PromptBatch) -> RewardSession:
        return _TextRewardSession(self, prompts)

    def encode(self, prompt: str, response: str) -> list[int]:
        """RM token ids of a decoder prompt text followed by a response text, left-truncated to ``max_length``."""
        ids = encode_prompt(self.tokenizer, prompt) + response_ids(self.tokenizer, response)
        return ids[-self.max_length :]

    def score_texts(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Raw rewards of (decoder prompt text, response) pairs, shape (N,), float32 on the CPU."""
        sequences = [self.encode(p, r) for p, r in zip(prompts, responses)]
        out = torch.empty(len(sequences))
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # length-sorted: little padding
        device = self.model.device
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            ids, mask = right_pad([sequences[i] for i in chunk], self.pad_id)
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out[chunk] = logits.reshape(len(chunk)).float().cpu()
        return out


class _TextRewardSession(RewardSession):
    can_select_rows = True

    def __init__(self, source: TextRewardModel, prompts: PromptBatch):
        self.source = source
        self.tokenizer = prompts.tokenizer
        self.prompt_texts = list(prompts.texts)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Finished rows leave the batch: keep the prompt texts of the remaining ones, in their new order."""
        self.prompt_texts = [self.prompt_texts[i] for i in rows.tolist()]

    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        return score_candidate_texts(
            self.tokenizer,
            candidates,
            lambda rows, texts: self.source.score_texts([self.prompt_texts[b] for b in rows], texts),
        )
