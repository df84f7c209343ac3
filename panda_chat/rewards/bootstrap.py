"""Reward heads for any base model, from nothing the user provides: ``panda-chat reward bootstrap``.

Heads are what make steering cheap (a small network on hidden states the decoder already has), but a user who brings
their own model has no heads and no pairs. For every pole of the catalog this module builds a head on *that model's*
hidden states, calibrated, and writes a manifest (``panda_chat.rewards.manifest``) where ``ChatPanda(model=...)``
finds it:

1. **Style-corpus pairs** (``pair_source``): a model-agnostic corpus whose every answer exists in every style
   combination (the caller passes it; the shipped one is ``panda_chat.demo.corpus``), so a pair differs in one
   pole only. Heads are token-level (``token_level``): pairs compared at every prefix length.
2. **Pairs the model writes itself** (``self_pairs`` per pole, for instruction models): each corpus question is
   asked twice, once with the pole's description as a style instruction and once with the opposite pole's; a pair
   is kept only when the corpus-trained head agrees it went the asked way (the model followed the instruction),
   then the head is re-trained on both sources.
3. **A pole given only in words** (no corpus pairs: a catalog entry with a description and examples): a direction
   in hidden space, from the mean hidden state of its description and examples against the other poles' texts,
   standardised and calibrated on neutral texts (``profiles.inference.NEUTRAL_TEXTS``). It costs what a head costs.

Heads read ``"prefix+token"`` features by default (``panda_chat.rewards.heads``): the hidden state before a token, the
mean over the answer before it and the token's embedding, so steering with them runs no forward of the k candidates
(personalised decoding costs about what plain decoding does). They read answers cut mid-way as well as
``"last+mean"`` heads do (the state at the token and the mean up to it, which need that forward), and far better than
the last state alone (on the demo model, 150 pairs per pole: held-out partial accuracy 0.95-1.00 for either, 0.78-0.87
on the last state; benchmarks/bench_personalize.py); ``features="last+mean"`` or ``"last"`` make those kinds.

Every pole's held-out accuracy (complete and partial answers) is in the report; words-only poles have none to give.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm

from panda_chat.padding import pad_token_id
from panda_chat.prompt_format import encode_prompt, question_prompt
from panda_chat.rewards.calibration import calibrate
from panda_chat.rewards.data import PreferencePair
from panda_chat.rewards.features import ResponseFeaturizer
from panda_chat.rewards.heads import DEFAULT_FEATURES, BaseModelSignature, HeadFeatures, RewardHead, RewardHeadConfig
from panda_chat.rewards.manifest import HeadEntry, HeadsManifest, LambdaEntry
from panda_chat.rewards.token_level import PrefixFeaturizer, fit_token_head, pair_accuracy
from panda_chat.rewards.training import RewardTrainingConfig, split_pairs
from profiles.catalog import Dimension, Pole, PreferenceCatalog
from profiles.inference import NEUTRAL_TEXTS

# (dimension, pole) -> (training pairs, held-out pairs), or None when the corpus does not know that pole of that
# dimension (a catalog's own "register.formal" is not the corpus's "tone.formal")
PairSource = Callable[[str, str], tuple[list[PreferencePair], list[PreferencePair]] | None]

HEADS_FOLDER = "heads"
MAX_TEXT_TOKENS = 512  # prompt + answer tokens read per training text (the corpus's longest answers fit)


def default_head_config(seed: int = 0) -> RewardTrainingConfig:
    """A small MLP head: on the demo model it reads partial answers better than a linear one (0.83 vs 0.77)."""
    return RewardTrainingConfig(epochs=40, lr=3e-3, head_kind="mlp", mlp_size=128, patience=5, seed=seed, val_split=0.0)


class PoleReport(BaseModel):
    dimension: str
    pole: str
    source: str  # "corpus", "corpus+self" or "words"
    path: str
    train_pairs: int = 0
    self_pairs: int = 0  # pairs the model wrote itself that were kept
    heldout_pairs: int = 0
    accuracy: float | None = None  # held-out complete answers
    partial_accuracy: float | None = None  # held-out partial answers
    seconds: float


class BootstrapReport(BaseModel):
    base_model: str
    out: str
    manifest: str
    poles: list[PoleReport]
    seconds: float
    settings: dict = Field(default_factory=dict)


def _generate_styled(model, tokenizer, question: str, description: str, max_new_tokens: int) -> str:
    """The model's own greedy answer to ``question`` when asked for the style ``description``."""
    text = question_prompt(tokenizer, f"{question}\n\n(Answer in this style: {description})")
    device = next(model.parameters()).device
    ids = torch.tensor([encode_prompt(tokenizer, text)], device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_token_id(tokenizer),
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def self_written_pairs(
    model, tokenizer, questions: Sequence[str], pole: Pole, others: Sequence[Pole], max_new_tokens: int = 48
) -> list[PreferencePair]:
    """Pairs the model writes itself: the answer asked in ``pole``'s style is chosen over one in another pole's."""
    pairs = []
    for i, question in enumerate(questions):
        other = others[i % len(others)]
        chosen = _generate_styled(model, tokenizer, question, pole.description, max_new_tokens)
        rejected = _generate_styled(model, tokenizer, question, other.description, max_new_tokens)
        if chosen and rejected and chosen != rejected:
            pairs.append(PreferencePair(prompt=question, chosen=chosen, rejected=rejected))
    return pairs


def words_head(
    model,
    tokenizer,
    dimension: Dimension,
    pole: Pole,
    name: str,
    source: str = "",
    features: HeadFeatures = DEFAULT_FEATURES,
) -> RewardHead:
    """A head from words only: the hidden-state direction of the pole's texts against the other poles' texts.

    Texts are read as answers to neutral questions (what the head will see at decoding time is an answer), the
    direction is taken in standardised hidden space and folded back, and the head is calibrated on neutral texts.
    """
    featurizer = ResponseFeaturizer(model, tokenizer, max_length=MAX_TEXT_TOKENS, features=features)
    neutral = list(NEUTRAL_TEXTS)

    def as_answers(texts: list[str]) -> torch.Tensor:
        prompts = [neutral[i % len(neutral)] for i in range(len(texts))]
        return featurizer(prompts, texts)

    own = as_answers([pole.description, *pole.examples])
    rest = as_answers(
        [t for other in dimension.poles if other.name != pole.name for t in (other.description, *other.examples)]
    )
    reference = as_answers(neutral[1:] + neutral[:1])  # neutral texts as answers to other neutral questions
    every = torch.cat([own, rest, reference])
    mean, std = every.mean(0), every.std(0, unbiased=False).clamp_min(1e-6)
    direction = ((own - mean) / std).mean(0) - ((rest - mean) / std).mean(0)
    direction = direction / direction.norm().clamp_min(1e-6)
    config = RewardHeadConfig(
        name=name,
        description=pole.description,
        kind="linear",
        hidden_size=featurizer.signature.hidden_size,
        features=featurizer.features,
        base_model=source,
        base_signature=BaseModelSignature.of(model),
    )
    head = RewardHead(config)
    if not isinstance(head.net, torch.nn.Linear):
        raise TypeError("a linear reward head has a single linear layer")
    with torch.no_grad():
        head.net.weight.copy_((direction / std)[None, :])
        head.net.bias.fill_(float(-(direction / std) @ mean))
        calibration = calibrate(head(reference))
    head.config = config.model_copy(
        update={
            "calibration": calibration,
            "training": {
                "objective": "direction from words (description + examples vs the other poles')",
                "pole_texts": 1 + len(pole.examples),
                "calibrated_on": "neutral texts",
            },
        }
    )
    return head.eval()


def bootstrap_heads(
    model,
    tokenizer,
    out: str | Path,
    *,
    catalog: PreferenceCatalog | None = None,
    pair_source: PairSource | None = None,
    self_pairs: int = 0,
    base_model: str = "",
    config: RewardTrainingConfig | None = None,
    max_prefixes: int = 16,
    features: HeadFeatures = DEFAULT_FEATURES,
    progress: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> BootstrapReport:
    """Build a head for every catalog pole of ``model`` into ``out`` and write its manifest (module docstring).

    A prompt and answer longer than ``MAX_TEXT_TOKENS``, or than the positions the model reads, are read up to there
    (the featurizers cut them: a model with learned positions cannot read past its last one at all)."""
    started = time.perf_counter()
    catalog = catalog or PreferenceCatalog.default()
    config = config or default_head_config()
    out = Path(out)
    (out / HEADS_FOLDER).mkdir(parents=True, exist_ok=True)
    model.eval()
    signature = BaseModelSignature.of(model)
    featurizer = PrefixFeaturizer(
        model, tokenizer, max_length=MAX_TEXT_TOKENS, max_prefixes=max_prefixes, features=features
    )
    poles: list[PoleReport] = []
    manifest = HeadsManifest(base_model=base_model, heads={}, lam=LambdaEntry(value=1.0))
    todo = [(dimension, pole) for dimension in catalog.dimensions for pole in dimension.poles]
    shared = {pole.name for i, (_, pole) in enumerate(todo) if any(pole.name == p.name for _, p in todo[:i])}
    bar = tqdm(todo, desc="reward heads", unit="pole", disable=not progress)
    for dimension, pole in bar:
        bar.set_postfix(pole=pole.name)
        pole_started = time.perf_counter()
        name = f"{dimension.name}.{pole.name}"
        found = pair_source(dimension.name, pole.name) if pair_source is not None else None
        key = name if pole.name in shared else pole.name  # a pole name two dimensions use: its dimension too
        path = out / HEADS_FOLDER / f"{key}.safetensors"
        if not found or not found[0]:
            head = words_head(model, tokenizer, dimension, pole, name, base_model, features)
            head.save(path)
            report = PoleReport(
                dimension=dimension.name,
                pole=pole.name,
                source="words",
                path=str(path.relative_to(out)),
                seconds=time.perf_counter() - pole_started,
            )
        else:
            train_pairs, heldout = found
            train, val = split_pairs(train_pairs, 0.1, config.seed)
            train_features = featurizer.pairs(train, seed=config.seed)
            val_features = featurizer.pairs(val, seed=config.seed + 1)
            trained = fit_token_head(
                train_features,
                val_features,
                name=name,
                signature=signature,
                source=base_model,
                description=pole.description,
                config=config,
                pair_counts=(len(train), len(val)),
            )
            source, kept = "corpus", 0
            if self_pairs > 0:
                others = [p for p in dimension.poles if p.name != pole.name]
                written = self_written_pairs(model, tokenizer, [p.prompt for p in train[:self_pairs]], pole, others)
                if written:
                    own = featurizer.pairs(written, seed=config.seed + 2)
                    with torch.no_grad():
                        agree = trained.head(own.chosen[own.complete]) > trained.head(own.rejected[own.complete])
                    followed = [pair for pair, ok in zip(written, agree.tolist(), strict=False) if ok]
                    kept = len(followed)
                    if followed:
                        extra = featurizer.pairs(followed, seed=config.seed + 3)
                        train_features = train_features.joined(extra)
                        trained = fit_token_head(
                            train_features,
                            val_features,
                            name=name,
                            signature=signature,
                            source=base_model,
                            description=pole.description,
                            config=config,
                            pair_counts=(len(train) + kept, len(val)),
                            training_extra={"self_pairs": kept},
                        )
                        source = "corpus+self"
            accuracy, partial = (
                pair_accuracy(trained.head, featurizer.pairs(heldout, seed=config.seed + 4))
                if heldout
                else (trained.report.accuracy, trained.report.partial_accuracy)
            )
            trained.head.save(path)
            report = PoleReport(
                dimension=dimension.name,
                pole=pole.name,
                source=source,
                path=str(path.relative_to(out)),
                train_pairs=len(train),
                self_pairs=kept,
                heldout_pairs=len(heldout),
                accuracy=accuracy,
                partial_accuracy=partial,
                seconds=time.perf_counter() - pole_started,
            )
        poles.append(report)
        manifest.heads[key] = HeadEntry(
            dimension=dimension.name,
            path=report.path,
            source=report.source,
            accuracy=report.accuracy,
            partial_accuracy=report.partial_accuracy,
        )
        log(_pole_line(report))
    bar.close()
    manifest.seconds = time.perf_counter() - started
    manifest_path = manifest.save(out)
    return BootstrapReport(
        base_model=base_model,
        out=str(out),
        manifest=str(manifest_path),
        poles=poles,
        seconds=manifest.seconds,
        settings={
            "self_pairs": self_pairs,
            "max_prefixes": max_prefixes,
            "head_kind": config.head_kind,
            "features": features,
        },
    )


def _pole_line(report: PoleReport) -> str:
    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    name = f"{report.dimension}.{report.pole}"
    return (
        f"{name:<22} {report.source:<12} held-out accuracy: complete "
        f"{fmt(report.accuracy)}, partial {fmt(report.partial_accuracy)} ({report.train_pairs} pairs"
        + (f", {report.self_pairs} self-written" if report.self_pairs else "")
        + f"; {report.seconds:.1f}s)"
    )
