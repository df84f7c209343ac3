"""Training the demo base LM: a small Llama learning the corpus's dialogues, loss on the assistant's tokens only.

A plain torch loop (AdamW, linear warm-up then cosine decay) on chat-template formatted dialogues. Only the
assistant's answer and its closing ``<|end|>`` are learned: the model must answer questions, not imitate users, and
it must learn to stop. The answer styles are uniform over the 8 combinations, so the trained model, asked a neutral
question, answers in a mix of styles; that mixture is what PANDA steers.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence

import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from panda_chat.demo.corpus import Dialogue
from panda_chat.padding import pad_token_id, right_pad
from panda_chat.prompt_format import question_ids, response_ids
from panda_chat.tiny_models import tiny_llama_config

IGNORE_INDEX = -100


class BaseLMConfig(BaseModel):
    """Size and optimisation settings of the demo base LM."""

    hidden_size: int = Field(default=192, gt=0)
    intermediate_size: int = Field(default=512, gt=0)
    num_hidden_layers: int = Field(default=4, gt=0)
    num_attention_heads: int = Field(default=4, gt=0)
    num_key_value_heads: int = Field(default=2, gt=0)
    steps: int = Field(default=450, gt=0)
    batch_size: int = Field(default=32, gt=0)
    lr: float = Field(default=3e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    warmup_steps: int = Field(default=40, ge=0)
    weight_decay: float = Field(default=0.01, ge=0)
    max_length: int = Field(default=192, gt=8)


class BaseLMReport(BaseModel):
    """What training measured: parameter count, losses (assistant tokens, nats/token) and time."""

    parameters: int
    steps: int
    tokens_seen: int
    first_loss: float
    final_train_loss: float  # mean over the last 20 steps
    heldout_loss: float  # on dialogues about held-out topics
    seconds: float


def encode_dialogue(
    tokenizer: PreTrainedTokenizerFast, dialogue: Dialogue, max_length: int
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one dialogue; labels are IGNORE_INDEX except on the answer and its closing EOS.

    The prompt is encoded exactly as the decoder encodes it (``panda_chat.prompt_format.question_ids``), so the
    model learns to continue precisely what it will be given.
    """
    prompt_ids = question_ids(tokenizer, dialogue.question)
    answer_ids = [*response_ids(tokenizer, dialogue.answer), tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    return ids, labels


def _batch(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding is masked out of attention and loss."""
    input_ids, mask = right_pad([ids for ids, _ in encoded], pad_id)
    labels, _ = right_pad([lab for _, lab in encoded], IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def lr_at(step: int, config: BaseLMConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``min_lr_ratio * lr`` at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def mean_answer_loss(
    model: LlamaForCausalLM, encoded: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 32
) -> float:
    """Token-weighted mean cross-entropy over the answer tokens of ``encoded`` dialogues."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = _batch(encoded[start : start + batch_size], pad_id)
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            total += float(model(**batch).loss) * n
            count += n
    return total / max(1, count)


def train_base_lm(
    tokenizer: PreTrainedTokenizerFast,
    train: Sequence[Dialogue],
    heldout: Sequence[Dialogue],
    config: BaseLMConfig,
    seed: int,
    progress: bool = True,
) -> tuple[LlamaForCausalLM, BaseLMReport]:
    """Train a fresh Llama on ``train`` for ``config.steps`` steps of ``batch_size`` dialogues drawn with ``seed``."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    model_config = tiny_llama_config(
        tokenizer,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,  # halves the embedding parameters: the shipped files must stay small
    )
    model = LlamaForCausalLM(model_config)
    pad_id = pad_token_id(tokenizer)
    encoded = [encode_dialogue(tokenizer, d, config.max_length) for d in train]
    heldout_encoded = [encode_dialogue(tokenizer, d, config.max_length) for d in heldout]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))
    rng = random.Random(seed)
    losses: list[float] = []
    tokens = 0
    bar = tqdm(range(config.steps), desc="base LM", unit="step", disable=not progress)
    model.train()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        batch = _batch([encoded[rng.randrange(len(encoded))] for _ in range(config.batch_size)], pad_id)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        tokens += int(batch["attention_mask"].sum())
        if step % 10 == 0 or step == config.steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    bar.close()
    heldout_loss = mean_answer_loss(model, heldout_encoded, pad_id) if heldout_encoded else float("nan")
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.max_new_tokens = 128
    model.generation_config.do_sample = False
    report = BaseLMReport(
        parameters=sum(p.numel() for p in model.parameters()),
        steps=config.steps,
        tokens_seen=tokens,
        first_loss=losses[0],
        final_train_loss=sum(losses[-20:]) / len(losses[-20:]),
        heldout_loss=heldout_loss,
        seconds=time.perf_counter() - started,
    )
    return model, report
