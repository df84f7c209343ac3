"""The stages of the demo-model recipe, run in order by ``run_recipe`` (``python -m panda_chat.demo.recipe``).

Stages (each with a progress bar): generate the corpus (``panda_chat.demo.corpus``); train a byte-level BPE
tokenizer on it; train the base LM (``panda_chat.demo.recipe.base_lm``); train one Bradley-Terry reward head per
catalog pole and one full reward model with the project's own reward training API (``panda_chat.rewards.training``),
measuring each on preference pairs about held-out topics; fit the context-aware lambda
(``panda_chat.demo.recipe.lambda_stage``); write a model card (``README.md``) into every folder and
``recipe_report.json`` with every measured number. ``RecipeConfig.quick()`` runs the same stages on a tiny model and
a few hundred examples (seconds): the tests use it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import cast

import torch
from pydantic import BaseModel, Field
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerFast,
)

from panda_chat.decoding import PandaDecoder
from panda_chat.demo.corpus import DialogueCorpus, style_pair_source
from panda_chat.demo.recipe.base_lm import BaseLMConfig, BaseLMReport, train_base_lm
from panda_chat.demo.recipe.cards import write_cards
from panda_chat.demo.recipe.lambda_stage import LambdaStageConfig, fit_demo_lambda
from panda_chat.padding import pad_token_id, right_pad
from panda_chat.prompt_format import question_ids
from panda_chat.rewards.bootstrap import bootstrap_heads, default_head_config
from panda_chat.rewards.data import PreferencePair
from panda_chat.rewards.features import ResponseFeaturizer, encode_response
from panda_chat.rewards.heads import RewardHead
from panda_chat.rewards.manifest import MANIFEST_FILE, HeadsManifest, LambdaEntry
from panda_chat.rewards.training import RewardTrainingConfig, train_reward_model
from panda_chat.tiny_models import train_tokenizer

REPORT_FILE = "recipe_report.json"
LAMBDA_FILE = "lambda.safetensors"
BASE_RECORD_FILE = "training_record.json"  # in base/: the base LM's settings, report and samples


class RecipeConfig(BaseModel):
    """Every setting of the recipe; ``quick()`` is the seconds-long variant the tests run."""

    seed: int = 0
    vocab_size: int = Field(default=2048, gt=300)
    tokenizer_dialogues: int = Field(default=5000, gt=0)
    train_dialogues: int = Field(default=20000, gt=0)
    heldout_dialogues: int = Field(default=300, gt=0)
    base: BaseLMConfig = Field(default_factory=BaseLMConfig)
    head_pairs_per_pole: int = Field(default=500, gt=1)  # each compared at up to 16 prefix lengths
    heldout_pairs_per_pole: int = Field(default=200, gt=0)
    head_kind: str = "mlp"
    head_epochs: int = Field(default=40, gt=0)
    reward_model_pole: str = "expert"
    reward_model_pairs: int = Field(default=300, gt=1)
    reward_model_epochs: int = Field(default=2, gt=0)
    reward_model_lr: float = Field(default=3e-4, gt=0)
    sample_prompts: int = Field(default=6, ge=0)
    lambda_fit: LambdaStageConfig = Field(default_factory=LambdaStageConfig)

    @classmethod
    def quick(cls, seed: int = 0) -> RecipeConfig:
        return cls(
            seed=seed,
            vocab_size=400,
            tokenizer_dialogues=300,
            train_dialogues=300,
            heldout_dialogues=20,
            base=BaseLMConfig(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                steps=6,
                batch_size=8,
                warmup_steps=2,
                max_length=96,
            ),
            head_pairs_per_pole=24,
            heldout_pairs_per_pole=16,
            head_epochs=3,
            reward_model_pairs=12,
            reward_model_epochs=1,
            sample_prompts=2,
            lambda_fit=LambdaStageConfig(prompts=4, max_new_tokens=8, grid=[(1.0, 1.0), (4.0, 1.0), (4.0, 0.9)]),
        )


# The settings a trained base LM depends on (``--reuse-base`` checks them).
_BASE_FIELDS = {
    "seed",
    "vocab_size",
    "tokenizer_dialogues",
    "train_dialogues",
    "heldout_dialogues",
    "base",
    "sample_prompts",
}


class HeadResult(BaseModel):
    pole: str
    file: str
    train_pairs: int
    val_accuracy: float | None  # on a random 10% of the training-topic pairs (early stopping)
    heldout_accuracy: float  # complete answers about held-out topics
    heldout_prefix_accuracy: float  # answers cut mid-way (after a random number of words), held-out topics
    heldout_partial_accuracy: float | None = None  # every token prefix after the answers first differ
    seconds: float


class RewardModelResult(BaseModel):
    pole: str
    folder: str
    parameters: int
    train_pairs: int
    epochs: int
    lr: float
    val_accuracy: float | None
    heldout_accuracy: float
    seconds: float


class RecipeReport(BaseModel):
    """Everything the recipe measured; the model cards are written from it."""

    config: RecipeConfig
    torch_version: str
    threads: int
    tokenizer_vocab: int
    corpus_train_dialogues: int
    corpus_distinct_answers: int
    base: BaseLMReport
    base_samples: list[dict[str, str]]  # greedy answers of the trained base LM to held-out prompts
    heads: list[HeadResult]
    reward_model: RewardModelResult
    lambda_fit: dict | None
    file_sizes_bytes: dict[str, int]
    base_reused: bool  # the base LM came from an earlier run with the same settings (--reuse-base)
    total_seconds: float  # every stage, the base LM's training included even when it was reused


def _stage(name: str) -> None:
    print(f"[recipe] {name}", flush=True)


def heldout_pairs(corpus: DialogueCorpus, pole: str, n: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(complete, prefix) preference pairs about topics training never saw."""
    return corpus.preference_pairs(pole, n, split="heldout"), corpus.prefix_pairs(pole, n, split="heldout")


def head_accuracy(head: RewardHead, featurizer: ResponseFeaturizer, pairs: list[PreferencePair]) -> float:
    """Share of pairs whose chosen response the head scores strictly above the rejected one."""
    prompts = [p.prompt for p in pairs]
    chosen = featurizer(prompts, [p.chosen for p in pairs])
    rejected = featurizer(prompts, [p.rejected for p in pairs])
    with torch.no_grad():
        return float((head(chosen) > head(rejected)).float().mean())


def reward_model_accuracy(folder: Path, pairs: list[PreferencePair], batch_size: int = 32) -> float:
    """Held-out pairwise accuracy of a sequence-classification reward model loaded back from ``folder``."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    correct = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs = [encode_response(tokenizer, p.prompt, r) for p in chunk for r in (p.chosen, p.rejected)]
        ids, mask = right_pad(seqs, pad_token_id(tokenizer))
        with torch.no_grad():
            scores = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).view(-1, 2)
        correct += int((scores[:, 0] > scores[:, 1]).sum())
    return correct / len(pairs)


def greedy_samples(
    model, tokenizer: PreTrainedTokenizerFast, prompts: list[str], max_new_tokens: int = 120
) -> list[dict[str, str]]:
    """The base LM's unguided greedy answers (for the model card: what the model does on its own)."""
    samples = []
    for prompt in prompts:
        ids = torch.tensor([question_ids(tokenizer, prompt)])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False
            )
        answer = cast(str, tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))  # one row
        samples.append({"prompt": prompt, "answer": answer})
    return samples


def train_tokenizer_on(corpus: DialogueCorpus, config: RecipeConfig) -> PreTrainedTokenizerFast:
    return train_tokenizer(corpus.iter_texts(config.tokenizer_dialogues), vocab_size=config.vocab_size)


def _file_sizes(out: Path) -> dict[str, int]:
    """Size of every file under ``out`` (the report itself, the loader's Python files and caches excluded)."""
    return {
        str(p.relative_to(out)): p.stat().st_size
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts and p.name != REPORT_FILE
    }


def run_recipe(out: str | Path, config: RecipeConfig, progress: bool = True, reuse_base: bool = False) -> RecipeReport:
    """Build every demo model into ``out`` (its model folders are replaced) and return the measured report.

    ``reuse_base``: keep a base LM this recipe already trained into ``out`` with the same settings (training is
    deterministic, so this only skips recomputing it) and redo the later stages.
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("heads", "reward_models"):
        shutil.rmtree(out / name, ignore_errors=True)
    torch.manual_seed(config.seed)
    corpus = DialogueCorpus(config.seed)

    _stage("corpus + tokenizer")
    train = corpus.dialogues(config.train_dialogues)
    heldout = corpus.dialogues(config.heldout_dialogues, split="heldout")
    tokenizer = train_tokenizer_on(corpus, config)

    base_dir = out / "base"
    base_record = base_dir / BASE_RECORD_FILE
    reused = reuse_base and base_record.is_file()
    if reused:
        _stage("base LM (reusing the one already trained in this folder)")
        record = json.loads(base_record.read_text(encoding="utf-8"))
        if record["config"] != config.model_dump(mode="json", include=_BASE_FIELDS):
            raise ValueError(f"{base_dir} was trained with other settings; run without --reuse-base")
        model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
        tokenizer = cast(PreTrainedTokenizerFast, AutoTokenizer.from_pretrained(base_dir))  # the fast one saved here
        base_report, samples = BaseLMReport.model_validate(record["report"]), record["samples"]
    else:
        _stage("base LM")
        shutil.rmtree(base_dir, ignore_errors=True)
        model, base_report = train_base_lm(tokenizer, train, heldout, config.base, seed=config.seed, progress=progress)
        model.save_pretrained(base_dir)
        tokenizer.save_pretrained(base_dir)
        samples = greedy_samples(model, tokenizer, corpus.prompts(config.sample_prompts, split="heldout"))
        base_record.write_text(
            json.dumps(
                {
                    "config": config.model_dump(mode="json", include=_BASE_FIELDS),
                    "report": base_report.model_dump(mode="json"),
                    "samples": samples,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )

    _stage("reward heads (token-level, panda_chat.rewards.bootstrap)")
    featurizer = ResponseFeaturizer(model, tokenizer, batch_size=32)
    head_config = default_head_config(config.seed).model_copy(
        update={"epochs": config.head_epochs, "head_kind": config.head_kind}
    )
    booted = bootstrap_heads(
        model,
        tokenizer,
        out,
        base_model="panda_chat/demo/models/base",
        config=head_config,
        progress=progress,
        pair_source=style_pair_source(config.seed, config.head_pairs_per_pole, config.heldout_pairs_per_pole),
    )
    heads: list[HeadResult] = []
    for pole_report in booted.poles:
        pole = pole_report.pole
        head = RewardHead.load(out / pole_report.path)
        _, prefixes = heldout_pairs(corpus, pole, config.heldout_pairs_per_pole)
        heads.append(
            HeadResult(
                pole=pole,
                file=pole_report.path,
                train_pairs=pole_report.train_pairs,
                val_accuracy=head.config.training.get("val_accuracy"),
                heldout_accuracy=pole_report.accuracy or 0.0,
                heldout_prefix_accuracy=head_accuracy(head, featurizer, prefixes),
                heldout_partial_accuracy=pole_report.partial_accuracy,
                seconds=pole_report.seconds,
            )
        )

    _stage(f"full reward model ({config.reward_model_pole})")
    rm_started = time.perf_counter()
    rm_dir = out / "reward_models" / config.reward_model_pole
    pole = config.reward_model_pole
    rm_pairs = corpus.preference_pairs(pole, config.reward_model_pairs) + corpus.prefix_pairs(
        pole, config.reward_model_pairs
    )
    rm_report = train_reward_model(
        base_dir,
        rm_pairs,
        rm_dir,
        name=pole,
        progress=progress,
        description=f"Full Bradley-Terry reward model for '{pole}' answers, fine-tuned from the demo base LM",
        config=RewardTrainingConfig(
            epochs=config.reward_model_epochs,
            lr=config.reward_model_lr,
            batch_size=16,
            seed=config.seed,
            patience=config.reward_model_epochs,
        ),
    )
    complete, _ = heldout_pairs(corpus, pole, config.heldout_pairs_per_pole)
    reward_model = RewardModelResult(
        pole=pole,
        folder=str(rm_dir.relative_to(out)),
        parameters=sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(rm_dir).parameters()),
        train_pairs=rm_report.train_pairs,
        epochs=rm_report.epochs_run,
        lr=config.reward_model_lr,
        val_accuracy=rm_report.val_accuracy,
        heldout_accuracy=reward_model_accuracy(rm_dir, complete),
        seconds=time.perf_counter() - rm_started,
    )

    _stage("lambda fit")
    decoder = PandaDecoder(model, tokenizer, rewards={h.pole: str(out / h.file) for h in heads})
    lam_model, lam_report, _ = fit_demo_lambda(decoder, corpus, config.lambda_fit, progress=progress)
    lam_model.save(out / LAMBDA_FILE)
    lambda_fit = {
        "file": LAMBDA_FILE,
        "config": config.lambda_fit.model_dump(mode="json"),
        **lam_report.model_dump(mode="json", exclude={"out"}),
    }
    (out / LAMBDA_FILE).with_suffix(".json").write_text(json.dumps(lambda_fit, indent=2) + "\n", encoding="utf-8")

    write_demo_manifest(out)

    report = RecipeReport(
        config=config,
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
        tokenizer_vocab=len(tokenizer),
        corpus_train_dialogues=len(train),
        corpus_distinct_answers=len({d.answer for d in train}),
        base=base_report,
        base_samples=samples,
        heads=heads,
        reward_model=reward_model,
        lambda_fit=lambda_fit,
        file_sizes_bytes={},
        base_reused=reused,
        total_seconds=0.0,
    )
    report.total_seconds = time.perf_counter() - started + (base_report.seconds if reused else 0.0)
    _stage("model cards")
    write_cards(out, report.model_dump(mode="json"))
    report.file_sizes_bytes = _file_sizes(out)
    (out / REPORT_FILE).write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return report


def write_demo_manifest(out: Path) -> Path:
    """The heads manifest ChatPanda reads, in the base model's folder: the bootstrap's, with paths from ``base/``
    and the fitted lambda."""
    manifest = HeadsManifest.load(out)
    if manifest is None:
        raise FileNotFoundError(f"no heads manifest in {out}: the heads stage did not run")
    for entry in manifest.heads.values():
        entry.path = f"../{entry.path}"
    manifest.lam = LambdaEntry(path=f"../{LAMBDA_FILE}")
    path = manifest.save(out / "base")
    (out / MANIFEST_FILE).unlink()
    return path
