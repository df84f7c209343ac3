"""Token-level reward heads: trained on pairs compared at every prefix length, because steering reads partial answers.

PANDA scores each candidate token by the reward of the answer so far plus that token. A head trained only on complete
answers is guessing mid-answer (the demo heads measured 0.975-1.0 on complete answers and 0.70-0.83 on answers cut
mid-way). PAD and GenARM learn token-level rewards instead; here a pair (prompt, chosen, rejected) becomes many
pairs: the hidden state of ``chosen[:t]`` against that of ``rejected[:t]`` for every token count t after the two
answers first differ (up to ``max_prefixes`` of them, evenly spaced, plus the two complete answers).

One forward per response gives the hidden states at *all* its positions, so token-level features cost what
complete-answer features cost; the running means over the answer are one cumulative sum, and ``"prefix+token"``
heads read the state one token earlier plus the token's embedding (``heads.answer_features``). Each row is exactly
what the decoder's head path reads for that prefix: the prompt formatted as the decoder formats it, then the
response's tokens one by one.

The held-out split is by pair, never by prefix, and the report gives both accuracies: on complete answers and on
partial ones (``partial_accuracy``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from panda_chat.padding import pad_token_id
from panda_chat.positions import readable_length
from panda_chat.prompt_format import question_ids, response_ids
from panda_chat.rewards.base import Calibration
from panda_chat.rewards.calibration import calibrate
from panda_chat.rewards.data import PreferencePair
from panda_chat.rewards.features import all_hidden_states, answer_rows
from panda_chat.rewards.heads import (
    DEFAULT_FEATURES,
    BaseModelSignature,
    HeadFeatures,
    RewardHead,
    RewardHeadConfig,
    input_size,
)
from panda_chat.rewards.training import (
    DEFAULT_LR,
    PairwiseRewardTrainer,
    RewardTrainingConfig,
    _StandardisedHead,
    split_pairs,
)


@dataclass
class PrefixPairs:
    """Feature pairs: row i compares ``chosen[i]`` with ``rejected[i]``; ``complete[i]`` when both are whole answers."""

    chosen: torch.Tensor  # (N, F) head inputs of kind ``features``
    rejected: torch.Tensor  # (N, F)
    complete: torch.Tensor  # (N,) bool
    features: HeadFeatures = DEFAULT_FEATURES

    def __len__(self) -> int:
        return int(self.chosen.shape[0])

    def joined(self, other: PrefixPairs) -> PrefixPairs:
        """These pairs followed by ``other``'s (of the same kind of head input)."""
        return type(self).cat([self, other], self.chosen.shape[1], self.features)

    @classmethod
    def cat(cls, parts: Sequence[PrefixPairs], width: int, features: HeadFeatures) -> PrefixPairs:
        if not parts:
            empty = torch.zeros(0, width)
            return cls(empty, empty.clone(), torch.zeros(0, dtype=torch.bool), features)
        return cls(
            torch.cat([p.chosen for p in parts]),
            torch.cat([p.rejected for p in parts]),
            torch.cat([p.complete for p in parts]),
            features,
        )


class TokenHeadReport(BaseModel):
    """What a token-level head run measured (``panda-chat reward bootstrap --json`` prints one per pole)."""

    name: str
    train_pairs: int
    val_pairs: int
    train_prefix_pairs: int
    accuracy: float | None  # held-out complete answers
    partial_accuracy: float | None  # held-out partial answers (every compared prefix length)
    best_epoch: int
    seconds: float
    calibration: Calibration


@dataclass
class TrainedTokenHead:
    head: RewardHead
    report: TokenHeadReport


class PrefixFeaturizer:
    """Head inputs (``features``, see ``panda_chat.rewards.heads.head_input``) of every prefix of (prompt, response)
    texts, for token-level pairs."""

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 16,
        max_length: int = 512,
        max_prefixes: int = 16,
        features: HeadFeatures = DEFAULT_FEATURES,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = readable_length(model, max_length)  # a model with learned positions reads no further
        self.max_prefixes = max_prefixes
        self.pad_id = pad_token_id(tokenizer)
        self.features: HeadFeatures = features
        self.hidden_size = BaseModelSignature.of(model).hidden_size  # a multimodal config keeps it in text_config

    def _encode(self, prompt: str, response: str) -> tuple[list[int], int]:
        """(ids, prompt length): the prompt as the decoder formats it, then the response's own tokens."""
        prompt_ids = question_ids(self.tokenizer, prompt)
        answer_ids = response_ids(self.tokenizer, response)
        budget = max(self.max_length - len(prompt_ids), 1)
        return prompt_ids + answer_ids[:budget], len(prompt_ids)

    def pairs(
        self, pairs: Sequence[PreferencePair], progress: bool = False, desc: str = "prefix features", seed: int = 0
    ) -> PrefixPairs:
        """Token-level feature pairs of ``pairs`` (see the module docstring)."""
        rng = random.Random(seed)
        parts: list[PrefixPairs | None] = []
        bar = tqdm(total=len(pairs), desc=desc, unit="pair", disable=not progress, leave=False)
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            encoded = [self._encode(p.prompt, r) for p in chunk for r in (p.chosen, p.rejected)]
            states = all_hidden_states(self.model, [ids for ids, _ in encoded], self.pad_id)
            for i in range(len(chunk)):
                (c_ids, c_start), (r_ids, r_start) = encoded[2 * i], encoded[2 * i + 1]
                c_rows = answer_rows(self.features, self.model, c_ids, states[2 * i], c_start)
                r_rows = answer_rows(self.features, self.model, r_ids, states[2 * i + 1], r_start)
                parts.append(self._compare(c_ids[c_start:], r_ids[r_start:], c_rows, r_rows, rng))
            bar.update(len(chunk))
        bar.close()
        width = input_size(self.features, self.hidden_size)
        return PrefixPairs.cat([p for p in parts if p is not None], width, self.features)

    def _compare(self, c_ids, r_ids, c_states, r_states, rng: random.Random) -> PrefixPairs | None:
        if not c_ids or not r_ids:
            return None
        first = 0
        while first < min(len(c_ids), len(r_ids)) and c_ids[first] == r_ids[first]:
            first += 1
        shared = min(len(c_ids), len(r_ids))
        positions = list(range(first, shared))  # 0-based last-token index of each compared prefix
        if len(positions) > self.max_prefixes:
            step = len(positions) / self.max_prefixes
            offset = rng.random() * step
            positions = [positions[int(offset + j * step)] for j in range(self.max_prefixes)]
        c_rows = [c_states[t] for t in positions] + [c_states[-1]]
        r_rows = [r_states[t] for t in positions] + [r_states[-1]]
        complete = [False] * len(positions) + [True]
        if c_ids == r_ids:
            return None
        return PrefixPairs(torch.stack(c_rows), torch.stack(r_rows), torch.tensor(complete), self.features)


def pair_accuracy(head: torch.nn.Module, features: PrefixPairs) -> tuple[float | None, float | None]:
    """(accuracy on complete answers, accuracy on partial ones); None where there are none. Ties count as wrong."""
    if not len(features):
        return None, None
    with torch.no_grad():
        right = head(features.chosen) > head(features.rejected)
    complete = features.complete
    whole = float(right[complete].float().mean()) if bool(complete.any()) else None
    partial = float(right[~complete].float().mean()) if bool((~complete).any()) else None
    return whole, partial


def fit_token_head(
    train: PrefixPairs,
    val: PrefixPairs,
    *,
    name: str,
    signature: BaseModelSignature,
    source: str = "",
    description: str = "",
    config: RewardTrainingConfig | None = None,
    pair_counts: tuple[int, int] = (0, 0),
    progress: bool = False,
    training_extra: dict | None = None,
) -> TrainedTokenHead:
    """A Bradley-Terry head on token-level feature pairs, calibrated on every training prefix it saw."""
    config = config or RewardTrainingConfig()
    started = time.perf_counter()
    responses = torch.cat([train.chosen, train.rejected])
    std = responses.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    torch.manual_seed(config.seed)
    head_config = RewardHeadConfig(
        name=name,
        description=description,
        kind=config.head_kind,
        hidden_size=signature.hidden_size,
        features=train.features,
        mlp_size=config.mlp_size,
        base_model=source,
        base_signature=signature,
    )
    module = _StandardisedHead(RewardHead(head_config), responses.mean(0), std)
    splits = {"train": train, "val": val}

    def score(split, index):
        data = splits[split]
        return module(data.chosen[index]), module(data.rejected[index])

    lr = config.lr or DEFAULT_LR["head"]
    trainer = PairwiseRewardTrainer(module, score, config, lr=lr, progress=progress)
    history, best_epoch = trainer.fit(len(train), len(val))
    _, train_accuracy = trainer.evaluate("train", len(train))
    head = module.folded()
    with torch.no_grad():
        calibration = calibrate(head(responses))
    accuracy, partial = pair_accuracy(head, val)
    report = TokenHeadReport(
        name=name,
        train_pairs=pair_counts[0],
        val_pairs=pair_counts[1],
        train_prefix_pairs=len(train),
        accuracy=accuracy,
        partial_accuracy=partial,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
        calibration=calibration,
    )
    facts = {
        "objective": "bradley-terry, token-level (pairs compared at every prefix length)",
        "train_pairs": pair_counts[0],
        "val_pairs": pair_counts[1],
        "train_prefix_pairs": len(train),
        "val_accuracy": accuracy,
        "val_partial_accuracy": partial,
        "train_accuracy": train_accuracy,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "lr": lr,
        "seed": config.seed,
        **(training_extra or {}),
    }
    head.config = head_config.model_copy(update={"calibration": calibration, "training": facts})
    return TrainedTokenHead(head=head, report=report)


def train_token_reward_head(
    featurizer: PrefixFeaturizer,
    pairs: Sequence[PreferencePair],
    *,
    name: str,
    description: str = "",
    config: RewardTrainingConfig | None = None,
    progress: bool = False,
) -> TrainedTokenHead:
    """Split ``pairs`` (by pair), build token-level features, and fit a head (``fit_token_head``)."""
    config = config or RewardTrainingConfig()
    pairs = [PreferencePair.of(p) for p in pairs]
    train, val = split_pairs(pairs, config.val_split, config.seed)
    model = featurizer.model
    return fit_token_head(
        featurizer.pairs(train, progress, seed=config.seed),
        featurizer.pairs(val, progress, seed=config.seed + 1),
        name=name,
        signature=BaseModelSignature.of(model),
        source=str(getattr(model.config, "_name_or_path", "")),
        description=description,
        config=config,
        pair_counts=(len(train), len(val)),
        progress=progress,
    )


__all__ = [
    "PrefixFeaturizer",
    "PrefixPairs",
    "TokenHeadReport",
    "TrainedTokenHead",
    "fit_token_head",
    "pair_accuracy",
    "train_token_reward_head",
]
