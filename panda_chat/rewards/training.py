"""Bradley-Terry reward training (the seed paper's Eq. 4): heads on cached features, or a full reward model.

Both kinds minimise ``-log sigmoid(r(x, y_w) - r(x, y_l))`` over preference pairs with AdamW, report the pairwise
accuracy on a held-out split after every epoch, stop early when that accuracy stops improving (validation loss
breaks ties), keep the best epoch's weights, and finish with a calibration pass: the mean/std of the trained reward
over every training response, saved with the reward so the decoder can combine it with others on one scale.

* ``train_reward_head``: a ``RewardHead`` (linear or tiny MLP) on the frozen base model's final hidden state. The
  features are computed once (``ResponseFeaturizer``), so training is a few thousand tiny matrix products: seconds on a
  CPU for thousands of pairs. The head trains on standardised features (real models' hidden states have a few huge
  dimensions that stall plain gradient descent) and the standardisation is folded into its first layer afterwards,
  so the saved head reads raw hidden states, as the decoder gives them.
* ``train_reward_model``: fine-tunes a whole ``AutoModelForSequenceClassification`` initialised from the base (the
  paper's setting), saved with ``save_pretrained`` plus ``panda_reward.json`` (calibration and training facts).

The training API never touches the profile store: per-user heads are trained from pairs the caller fetched.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn
from tqdm.auto import tqdm

from panda_chat.padding import pad_token_id, right_pad
from panda_chat.rewards.base import Calibration
from panda_chat.rewards.calibration import RewardModelInfo, calibrate
from panda_chat.rewards.data import PreferencePair
from panda_chat.rewards.features import ResponseFeaturizer, encode_response
from panda_chat.rewards.heads import BaseModelSignature, RewardHead, RewardHeadConfig

# Per-kind learning-rate defaults: a head on standardised features learns fast; a full model must not forget.
DEFAULT_LR = {"head": 1e-2, "model": 2e-5}

# (split, pair indices) -> (rewards of the chosen responses, rewards of the rejected ones), both of shape (n,)
PairScorer = Callable[[Literal["train", "val"], torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class RewardTrainingConfig(BaseModel):
    """Hyper-parameters shared by both kinds; ``lr=None`` picks the kind's default (``DEFAULT_LR``)."""

    epochs: int = Field(default=20, gt=0)
    lr: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=64, gt=0)
    val_split: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 0
    patience: int = Field(default=3, gt=0)  # epochs without a better validation accuracy before stopping
    weight_decay: float = Field(default=0.01, ge=0.0)
    head_kind: Literal["linear", "mlp"] = "linear"
    mlp_size: int = Field(default=64, gt=0)
    max_length: int = Field(default=1024, gt=1)


class EpochStats(BaseModel):
    epoch: int
    train_loss: float
    val_loss: float | None = None
    val_accuracy: float | None = None


class RewardTrainingReport(BaseModel):
    """What a training run did; ``panda-chat reward train --json`` prints this."""

    kind: Literal["head", "model"]
    name: str
    out: str | None = None
    train_pairs: int
    val_pairs: int
    val_accuracy: float | None  # pairwise accuracy of the kept epoch on the held-out pairs (None without any)
    train_accuracy: float
    best_epoch: int
    epochs_run: int
    seconds: float
    feature_seconds: float | None = None  # heads only: time spent computing (or loading cached) features
    calibration: Calibration
    history: list[EpochStats]


def split_pairs(
    pairs: Sequence[PreferencePair], val_split: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Shuffle (seeded) and hold out ``val_split`` of the pairs; at least one each way when there are two or more."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = round(len(pairs) * val_split)
    if val_split > 0 and len(pairs) >= 2:
        n_val = min(max(n_val, 1), len(pairs) - 1)
    val = [pairs[i] for i in order[:n_val]]
    train = [pairs[i] for i in order[n_val:]]
    if not train:
        raise ValueError("no preference pairs to train on")
    return train, val


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_w - r_l), averaged: the negative log-likelihood of the preferences under Bradley-Terry."""
    return -F.logsigmoid(chosen - rejected).mean()


class PairwiseRewardTrainer:
    """The Bradley-Terry loop shared by heads and full models: AdamW, per-epoch validation, early stopping.

    The trainer knows nothing about texts or features: ``score(split, index)`` returns the rewards of a batch of
    pairs, so the same loop trains a head on cached features and a transformer on token ids.
    """

    def __init__(
        self, module: nn.Module, score: PairScorer, config: RewardTrainingConfig, lr: float, progress: bool = False
    ):
        self.module = module
        self.score = score
        self.config = config
        self.progress = progress
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)

    def evaluate(self, split: Literal["train", "val"], size: int) -> tuple[float, float]:
        """(mean BT loss, pairwise accuracy) over a split; ties (r_w == r_l) count as wrong."""
        self.module.eval()
        losses, correct = [], 0
        with torch.no_grad():
            for start in range(0, size, self.config.batch_size):
                index = torch.arange(start, min(start + self.config.batch_size, size))
                chosen, rejected = self.score(split, index)
                losses.append(float(bradley_terry_loss(chosen, rejected)) * len(index))
                correct += int((chosen > rejected).sum())
        return sum(losses) / size, correct / size

    def fit(self, n_train: int, n_val: int) -> tuple[list[EpochStats], int]:
        """Train; returns the per-epoch history and the kept (best) epoch, whose weights the module ends with."""
        generator = torch.Generator().manual_seed(self.config.seed)
        history: list[EpochStats] = []
        best_key, best_epoch, best_state, stale = None, 0, None, 0
        bar = tqdm(range(1, self.config.epochs + 1), desc="epochs", unit="epoch", disable=not self.progress)
        for epoch in bar:
            self.module.train()
            total = 0.0
            for index in torch.randperm(n_train, generator=generator).split(self.config.batch_size):
                chosen, rejected = self.score("train", index)
                loss = bradley_terry_loss(chosen, rejected)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += float(loss.detach()) * len(index)
            stats = EpochStats(epoch=epoch, train_loss=total / n_train)
            if n_val:
                stats.val_loss, stats.val_accuracy = self.evaluate("val", n_val)
                bar.set_postfix(val_acc=f"{stats.val_accuracy:.3f}", val_loss=f"{stats.val_loss:.3f}")
            history.append(stats)
            if not n_val or stats.val_loss is None or stats.val_accuracy is None:
                best_epoch = epoch
                continue
            key = (stats.val_accuracy, -stats.val_loss)
            if best_key is None or key > best_key:
                best_key, best_epoch, stale = key, epoch, 0
                best_state = copy.deepcopy(self.module.state_dict())
            else:
                stale += 1
                if stale >= self.config.patience:
                    break
        bar.close()
        if best_state is not None:
            self.module.load_state_dict(best_state)
        self.module.eval()
        return history, best_epoch


@dataclass
class TrainedRewardHead:
    head: RewardHead
    report: RewardTrainingReport


class _StandardisedHead(nn.Module):
    """head((h - mean) / std) during training; ``folded()`` returns the head that reads raw ``h``."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, head: RewardHead, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.head = head
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head((hidden - self.mean) / self.std)

    def folded(self) -> RewardHead:
        """W (h - m) / s + b  ==  (W / s) h + (b - (W / s) m): the same function on raw hidden states."""
        head = copy.deepcopy(self.head)
        first = head.net if isinstance(head.net, nn.Linear) else head.net[0]
        if not isinstance(first, nn.Linear):
            raise TypeError(f"a reward head's first layer must be linear, not {type(first).__name__}")
        with torch.no_grad():
            first.weight.div_(self.std)
            first.bias.sub_(first.weight @ self.mean)
        return head.eval()


def _load_causal_lm(base):
    """(model, tokenizer, source string) from a folder/hub name, or from an already loaded (model, tokenizer) pair."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(base, (str, Path)):
        return AutoModelForCausalLM.from_pretrained(base).eval(), AutoTokenizer.from_pretrained(base), str(base)
    model, tokenizer = base
    return model, tokenizer, str(getattr(model.config, "_name_or_path", ""))


def train_reward_head(
    base,
    pairs: Sequence[PreferencePair],
    *,
    name: str,
    description: str = "",
    config: RewardTrainingConfig | None = None,
    featurizer: ResponseFeaturizer | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> TrainedRewardHead:
    """Train a Bradley-Terry reward head on the frozen base model's hidden states.

    ``base``: a model folder (or hub name), or a loaded ``(causal_lm, tokenizer)`` pair. Pass a ``featurizer`` to
    reuse its in-memory feature cache across runs; ``cache_dir`` keeps features on disk instead.
    """
    config = config or RewardTrainingConfig()
    started = time.perf_counter()
    pairs = [PreferencePair.of(p) for p in pairs]
    if featurizer is None:
        model, tokenizer, source = _load_causal_lm(base)
        featurizer = ResponseFeaturizer(model, tokenizer, max_length=config.max_length, cache_dir=cache_dir)
    else:
        model, source = featurizer.model, str(getattr(featurizer.model.config, "_name_or_path", ""))
    train, val = split_pairs(pairs, config.val_split, config.seed)

    feature_started = time.perf_counter()
    feats = {}
    for split, subset in (("train", train), ("val", val)):
        both = featurizer(
            [p.prompt for p in subset] * 2, [p.chosen for p in subset] + [p.rejected for p in subset], progress=progress
        )
        feats[split] = (both[: len(subset)], both[len(subset) :])
    feature_seconds = time.perf_counter() - feature_started

    train_responses = torch.cat(feats["train"])
    std = train_responses.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    torch.manual_seed(config.seed)
    head_config = RewardHeadConfig(
        name=name,
        description=description,
        kind=config.head_kind,
        hidden_size=featurizer.signature.hidden_size,
        features=featurizer.features,
        mlp_size=config.mlp_size,
        base_model=source,
        base_signature=BaseModelSignature.of(model),
    )
    module = _StandardisedHead(RewardHead(head_config), train_responses.mean(0), std)

    def score(split, index):
        chosen, rejected = feats[split]
        return module(chosen[index]), module(rejected[index])

    lr = config.lr or DEFAULT_LR["head"]
    trainer = PairwiseRewardTrainer(module, score, config, lr=lr, progress=progress)
    history, best_epoch = trainer.fit(len(train), len(val))
    _, train_accuracy = trainer.evaluate("train", len(train))
    head = module.folded()
    with torch.no_grad():
        calibration = calibrate(head(train_responses))
    best = history[best_epoch - 1]
    report = RewardTrainingReport(
        kind="head",
        name=name,
        train_pairs=len(train),
        val_pairs=len(val),
        val_accuracy=best.val_accuracy,
        train_accuracy=train_accuracy,
        best_epoch=best_epoch,
        epochs_run=len(history),
        seconds=time.perf_counter() - started,
        feature_seconds=feature_seconds,
        calibration=calibration,
        history=history,
    )
    head.config = head_config.model_copy(
        update={"calibration": calibration, "training": _training_facts(report, config, lr)}
    )
    return TrainedRewardHead(head=head, report=report)


def _training_facts(report: RewardTrainingReport, config: RewardTrainingConfig, lr: float) -> dict:
    return {
        "objective": "bradley-terry",
        "train_pairs": report.train_pairs,
        "val_pairs": report.val_pairs,
        "val_accuracy": report.val_accuracy,
        "train_accuracy": report.train_accuracy,
        "best_epoch": report.best_epoch,
        "epochs_run": report.epochs_run,
        "lr": lr,
        "batch_size": config.batch_size,
        "seed": config.seed,
    }


def train_reward_model(
    base: str | Path,
    pairs: Sequence[PreferencePair],
    out_dir: str | Path,
    *,
    name: str = "",
    description: str = "",
    config: RewardTrainingConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> RewardTrainingReport:
    """Fine-tune ``AutoModelForSequenceClassification`` (one label) from ``base`` with the Bradley-Terry loss.

    Saves the model and tokenizer with ``save_pretrained`` into ``out_dir``, plus ``panda_reward.json`` with the
    calibration (mean/std of the trained reward over the training responses) and the training facts.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = config or RewardTrainingConfig()
    started = time.perf_counter()
    pairs = [PreferencePair.of(p) for p in pairs]
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(config.seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).to(device)
    model.config.pad_token_id = tokenizer.pad_token_id
    train, val = split_pairs(pairs, config.val_split, config.seed)

    def rewards(texts: list[tuple[str, str]]) -> torch.Tensor:
        seqs = [encode_response(tokenizer, p, r, config.max_length) for p, r in texts]
        ids, mask = right_pad(seqs, pad_token_id(tokenizer))  # the model pools at the last non-pad token
        return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.squeeze(-1).float()

    subsets = {"train": train, "val": val}

    def score(split, index):
        subset = [subsets[split][i] for i in index.tolist()]
        both = rewards([(p.prompt, p.chosen) for p in subset] + [(p.prompt, p.rejected) for p in subset])
        return both[: len(subset)], both[len(subset) :]

    lr = config.lr or DEFAULT_LR["model"]
    trainer = PairwiseRewardTrainer(model, score, config, lr=lr, progress=progress)
    history, best_epoch = trainer.fit(len(train), len(val))
    _, train_accuracy = trainer.evaluate("train", len(train))
    responses = sorted({(p.prompt, r) for p in train for r in (p.chosen, p.rejected)})
    with torch.no_grad():
        scores = torch.cat(
            [rewards(responses[i : i + config.batch_size]).cpu() for i in range(0, len(responses), config.batch_size)]
        )
    calibration = calibrate(scores)
    best = history[best_epoch - 1]
    report = RewardTrainingReport(
        kind="model",
        name=name,
        out=str(out_dir),
        train_pairs=len(train),
        val_pairs=len(val),
        val_accuracy=best.val_accuracy,
        train_accuracy=train_accuracy,
        best_epoch=best_epoch,
        epochs_run=len(history),
        seconds=0.0,
        calibration=calibration,
        history=history,
    )
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    RewardModelInfo(
        name=name,
        description=description,
        base_model=str(base),
        calibration=calibration,
        training=_training_facts(report, config, lr),
    ).save(out)
    report.seconds = time.perf_counter() - started
    return report


def train_user_reward_head(
    store,
    user_id: str,
    base,
    *,
    name: str = "feedback",
    description: str = "",
    config: RewardTrainingConfig | None = None,
    min_pairs: int = 4,
    progress: bool = False,
) -> TrainedRewardHead:
    """Train a reward head on one user's own feedback pairs and save it back into their profile.

    ``store`` is a ``profiles.ProfileStore`` (anything with ``user_key(user_id)``, ``feedback_pairs(user_id)`` and
    ``save_reward_head(user_id, name, data, meta, expected_key=)``): the pairs are fetched here, trained on with
    ``train_reward_head``, and the head file's bytes are stored under ``name`` (replacing an older head of that name),
    unless the user was forgotten while the head trained.
    """
    key = store.user_key(user_id)
    pairs = store.feedback_pairs(user_id)
    if len(pairs) < min_pairs:
        raise ValueError(
            f"user '{user_id}' has {len(pairs)} feedback pair(s); "
            f"at least {min_pairs} are needed to train a reward head"
        )
    from panda_chat.rewards.token_level import PrefixFeaturizer, train_token_reward_head  # it builds on this module

    description = description or f"learned from the feedback of user '{user_id}'"
    config = config or RewardTrainingConfig()
    started = time.perf_counter()
    model, tokenizer, _ = _load_causal_lm(base)
    # token-level: the head steers partial answers, so it learns from the pairs compared at every prefix length
    token_head = train_token_reward_head(
        PrefixFeaturizer(model, tokenizer, max_length=config.max_length),
        [PreferencePair.of(p) for p in pairs],
        name=name,
        description=description,
        config=config,
        progress=progress,
    )
    facts, token_report = token_head.head.config.training, token_head.report
    report = RewardTrainingReport(
        kind="head",
        name=name,
        train_pairs=token_report.train_pairs,
        val_pairs=token_report.val_pairs,
        val_accuracy=token_report.accuracy,
        train_accuracy=facts["train_accuracy"],
        best_epoch=token_report.best_epoch,
        epochs_run=facts["epochs_run"],
        seconds=time.perf_counter() - started,
        calibration=token_report.calibration,
        history=[],
    )
    store.save_reward_head(
        user_id,
        name,
        token_head.head.to_bytes(),
        meta={
            "kind": "head",
            "base_model": token_head.head.config.base_model,
            "train_pairs": report.train_pairs,
            "val_pairs": report.val_pairs,
            "val_accuracy": report.val_accuracy,
            "val_partial_accuracy": token_report.partial_accuracy,
            "objective": "token-level",
        },
        expected_key=key,
    )
    return TrainedRewardHead(head=token_head.head, report=report)
