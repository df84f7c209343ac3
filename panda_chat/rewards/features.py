"""Reward-head features (``panda_chat.rewards.heads.answer_features``) from the frozen base model's final (normed)
hidden states over a response: at its last token and its mean (``"last+mean"``), or the state before the last
token, the mean before it and the last token's embedding (``"prefix+token"``).

This is exactly what the decoder's head path sees for a candidate token: the prompt formatted as the decoder formats
it (``panda_chat.prompt_format.question_ids``), then the response's tokens, and the hidden state at the last of them.
A head trained on these features therefore scores, at decoding time, the very quantity it was trained on.

Features are computed once per (prompt, response) text and reused: in memory across calls of one
``ResponseFeaturizer``, and optionally on disk (``cache_dir``) keyed by a hash of the texts and the base model's
signature, so re-training a head with other hyper-parameters costs no forward pass at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from panda_chat.padding import pad_token_id, right_pad
from panda_chat.positions import readable_length
from panda_chat.prompt_format import question_ids, response_ids
from panda_chat.rewards.heads import (
    DEFAULT_FEATURES,
    BaseModelSignature,
    HeadFeatures,
    answer_features,
    input_size,
    token_embeddings,
)


def encode_response(tokenizer, prompt: str, response: str, max_length: int | None = None) -> list[int]:
    """Prompt ids followed by the response's ids (no special tokens), left-truncated to ``max_length``.

    Left truncation keeps the response's end, where the reward is read; only over-long prompts lose their start.
    """
    return encode_answer(tokenizer, prompt, response, max_length)[0]


def encode_answer(tokenizer, prompt: str, response: str, max_length: int | None = None) -> tuple[list[int], int]:
    """``encode_response``'s ids and where the response starts in them (0 when truncation cut into it)."""
    answer = response_ids(tokenizer, response)
    ids = question_ids(tokenizer, prompt) + answer
    if max_length is not None and len(ids) > max_length:
        ids = ids[-max_length:]
    return ids, max(len(ids) - len(answer), 0)


def last_token_hidden_states(model, sequences: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """(N, H) final normed hidden state at the last token of each id sequence, in one right-padded forward.

    Right padding with a causal mask leaves every real token's positions and attention exactly as unpadded, so the
    result equals running each sequence alone.
    """
    hidden = all_hidden_states(model, sequences, pad_id)
    return torch.stack([states[-1] for states in hidden])


def all_hidden_states(model, sequences: Sequence[Sequence[int]], pad_id: int) -> list[torch.Tensor]:
    """Per sequence, (len, H) float32 final normed hidden states at every position, in one right-padded forward
    (the same as running each sequence alone, see ``last_token_hidden_states``)."""
    device = next(model.parameters()).device
    ids, mask = right_pad(sequences, pad_id)
    backbone = model.base_model  # the decoder stack without the LM head: its last_hidden_state is after the final norm
    with torch.no_grad():
        hidden = backbone(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    hidden = hidden.float().cpu()
    return [hidden[i, : len(seq)] for i, seq in enumerate(sequences)]


def answer_rows(features: HeadFeatures, model, ids: Sequence[int], states: torch.Tensor, start: int) -> torch.Tensor:
    """(T, F) head inputs at every token of the answer that starts at ``start`` in ``ids``, from the sequence's final
    hidden states (len, H): what both featurizers read. An empty answer is read at its prompt's last token."""
    start = min(start, states.shape[0] - 1)
    before = states[start - 1] if start > 0 else torch.zeros_like(states[0])  # truncation cut into the answer: none
    embeddings = None
    if features == "prefix+token":
        embeddings = token_embeddings(model, torch.tensor(list(ids[start:]))).float().cpu()
    return answer_features(features, states[start:], before, embeddings)


class ResponseFeaturizer:
    """Computes (and caches) head features for (prompt, response) texts with a frozen base model."""

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 16,
        max_length: int = 1024,
        cache_dir: str | Path | None = None,
        features: HeadFeatures = DEFAULT_FEATURES,
    ):
        self.model = model.eval()
        self.features: HeadFeatures = features
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = readable_length(model, max_length)  # a model with learned positions reads no further
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.signature = BaseModelSignature.of(model)
        self._memory: dict[tuple[str, str], torch.Tensor] = {}
        self.pad_id = pad_token_id(tokenizer)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], progress: bool = False) -> torch.Tensor:
        """(N, F) float32 head inputs (``F`` is ``feature_size``), row i for (prompts[i], responses[i])."""
        if len(prompts) != len(responses):
            raise ValueError("prompts and responses must have the same length")
        keys = list(zip(prompts, responses))
        disk = self._disk_path(keys)
        if disk is not None and disk.is_file():
            return load_file(str(disk))["features"]
        todo = sorted({k for k in keys if k not in self._memory}, key=lambda k: len(k[0]) + len(k[1]))
        encoded = [encode_answer(self.tokenizer, p, r, self.max_length) for p, r in todo]
        bar = tqdm(total=len(todo), desc="features", unit="resp", disable=not progress, leave=False)
        for start in range(0, len(todo), self.batch_size):  # length-sorted batches: little padding
            chunk = encoded[start : start + self.batch_size]
            states = all_hidden_states(self.model, [ids for ids, _ in chunk], self.pad_id)
            for key, (ids, answer_start), row in zip(todo[start : start + self.batch_size], chunk, states):
                self._memory[key] = answer_rows(self.features, self.model, ids, row, answer_start)[-1]
            bar.update(len(chunk))
        bar.close()
        features = torch.stack([self._memory[k] for k in keys]) if keys else torch.zeros(0, self.feature_size)
        if disk is not None:
            disk.parent.mkdir(parents=True, exist_ok=True)
            save_file({"features": features.contiguous()}, str(disk))
        return features

    @property
    def feature_size(self) -> int:
        return input_size(self.features, self.signature.hidden_size)

    def _disk_path(self, keys: list[tuple[str, str]]) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256()
        digest.update(self.signature.model_dump_json().encode())
        digest.update(json.dumps([self.max_length, self.features, keys]).encode())
        return self.cache_dir / f"features-{digest.hexdigest()[:32]}.safetensors"
