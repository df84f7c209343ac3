"""Tiny, locally built models for tests, benchmarks and offline experiments.

No hub is reachable on many machines that run panda-chat's tests (CI, air-gapped labs), so everything a test needs is
built here from scratch: a byte-level BPE tokenizer trained on local text (with a chat template and an end-of-turn EOS
token), a random-init Llama causal LM and a same-tokenizer ``LlamaForSequenceClassification`` reward model. They are
saved with ``save_pretrained`` so that tests load them back through the very same ``from_pretrained`` code users run.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|end|>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, "<|system|>", "<|user|>", "<|assistant|>"]

# Each turn is "<|role|>content<|end|>"; the assistant's turn ends with the EOS token, so a model trained on this
# format stops by itself, and a generation prompt ends with "<|assistant|>".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

_SUBJECTS = [
    "the cat",
    "a physicist",
    "my neighbour",
    "the old engine",
    "our team",
    "a student",
    "the river",
    "this recipe",
    "the compiler",
    "a friendly robot",
    "the committee",
    "your garden",
]
_VERBS = [
    "explains",
    "measures",
    "cooks",
    "builds",
    "describes",
    "compares",
    "enjoys",
    "repairs",
    "questions",
    "simplifies",
    "formalises",
    "summarises",
]
_OBJECTS = [
    "quantum tunnelling",
    "a simple soup",
    "the budget",
    "sorting algorithms",
    "the weather",
    "a bicycle",
    "linear algebra",
    "bread dough",
    "the meeting notes",
    "photosynthesis",
    "a database index",
    "the rules",
]
_TAILS = [
    "in detail.",
    "briefly.",
    "with great care!",
    "for beginners.",
    "like an expert would.",
    "politely.",
    "in plain words.",
    "step by step.",
    "formally, as required.",
    "with a smile :)",
]


def sample_corpus(n_sentences: int = 2000, seed: int = 0) -> list[str]:
    """Varied English-like sentences (plus digits and punctuation) to train a small tokenizer on."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_sentences):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
        if i % 7 == 0:
            s += f" It took {rng.randint(1, 999)} minutes, about {rng.random():.2f} of the day."
        lines.append(s[0].upper() + s[1:])
    return lines


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``: any string encodes, and decoding round-trips exactly."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> LlamaConfig:
    """A small Llama config matched to ``tokenizer``'s special tokens; ``overrides`` change any field."""
    fields = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def build_causal_lm(out_dir: str | Path, tokenizer: PreTrainedTokenizerFast, seed: int = 0, **config) -> Path:
    """Save a random-init Llama causal LM and its tokenizer to ``out_dir`` (loadable with ``from_pretrained``)."""
    out = Path(out_dir)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, **config)).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_reward_model(out_dir: str | Path, tokenizer: PreTrainedTokenizerFast, seed: int = 1, **config) -> Path:
    """Save a random-init ``LlamaForSequenceClassification`` (one label: a scalar reward) and its tokenizer."""
    out = Path(out_dir)
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=1, **config)).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@dataclass(frozen=True)
class TinyModelSet:
    """Folders of one consistent set of tiny models."""

    base: Path  # causal LM + tokenizer
    reward_model: Path  # sequence-classification RM, same tokenizer as ``base``
    other_tokenizer_reward_model: Path  # RM with a different tokenizer (for cross-tokenizer paths and errors)


def build_tiny_model_set(root: str | Path, seed: int = 0) -> TinyModelSet:
    """Build the standard test set of tiny models under ``root``."""
    root = Path(root)
    tokenizer = train_tokenizer(sample_corpus(seed=seed), vocab_size=512)
    other = train_tokenizer(sample_corpus(seed=seed + 1), vocab_size=384)
    return TinyModelSet(
        base=build_causal_lm(root / "base", tokenizer, seed=seed),
        reward_model=build_reward_model(root / "rm", tokenizer, seed=seed + 1),
        other_tokenizer_reward_model=build_reward_model(root / "rm_other_tok", other, seed=seed + 2),
    )
