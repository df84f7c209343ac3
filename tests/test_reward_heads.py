"""Reward head files: round trip, base-model check, and scores from hidden states."""

import pytest
import torch
from candidates import candidates_with, random_heads
from transformers import AutoModelForCausalLM

from panda_chat.rewards.base import Calibration
from panda_chat.rewards.heads import (
    BaseModelSignature,
    HeadMismatchError,
    HeadReward,
    HeadStack,
    RewardHead,
    RewardHeadConfig,
)
from panda_chat.tiny_models import build_causal_lm, sample_corpus, train_tokenizer


def _head_for(model, kind="linear"):
    torch.manual_seed(0)
    cfg = RewardHeadConfig(
        name="formal",
        kind=kind,
        hidden_size=model.config.hidden_size,
        base_signature=BaseModelSignature.of(model),
        calibration=Calibration(mean=0.5, std=2.0),
    )
    return RewardHead(cfg)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_head_file_round_trip_keeps_weights_and_config(tiny_models, tmp_path, kind):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base)
    head = _head_for(model, kind)
    loaded = RewardHead.load(head.save(tmp_path / "formal.safetensors"))
    h = torch.randn(3, 5, model.config.hidden_size)
    assert torch.allclose(head(h), loaded(h))
    assert loaded.config == head.config
    loaded.check_base(model)  # same model: accepted


def test_head_is_accepted_on_same_base_in_bfloat16(tiny_models, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base)
    head = RewardHead.load(_head_for(model).save(tmp_path / "h.safetensors"))
    head.check_base(AutoModelForCausalLM.from_pretrained(tiny_models.base, dtype=torch.bfloat16))


def test_head_refuses_another_base_model(tiny_models, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base)
    head = RewardHead.load(_head_for(model).save(tmp_path / "h.safetensors"))
    # Same architecture and tokenizer, different weights: must still be refused.
    tok = train_tokenizer(sample_corpus(), vocab_size=512)
    other = AutoModelForCausalLM.from_pretrained(build_causal_lm(tmp_path / "other", tok, seed=123))
    with pytest.raises(HeadMismatchError, match=r"another base model.*`panda-chat reward bootstrap --base MODEL`"):
        head.check_base(other)  # says how to get heads for this model


def test_loading_a_non_head_file_says_so(tiny_models, tmp_path):
    with pytest.raises(FileNotFoundError):
        RewardHead.load(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="not a panda-chat reward head"):
        RewardHead.load(next(tiny_models.base.glob("*.safetensors")))


def test_head_reward_scores_each_candidate_hidden_state(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base)
    head = _head_for(model)
    source = HeadReward(head)
    assert source.needs_base_hidden and source.calibration.mean == 0.5
    hidden = torch.randn(2, 4, model.config.hidden_size)
    batch = candidates_with(2, 4, base_hidden=hidden)
    scores = source.start(prompts=None).score(batch)
    assert scores.shape == (2, 4)
    assert torch.allclose(scores, head(hidden))


def test_a_head_from_a_newer_format_is_refused_not_misread(tiny_models, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base)
    head = _head_for(model)
    head.config = head.config.model_copy(update={"format_version": 99})
    path = head.save(tmp_path / "future.safetensors")
    for source in (path, head.to_bytes()):
        loader = RewardHead.load if source is path else RewardHead.from_bytes
        with pytest.raises(ValueError, match="format 99; upgrade panda-chat"):
            loader(source)


def test_a_head_stack_scores_every_head_as_its_own_forward_does(tiny_models):
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base)
    hidden_size = model.config.hidden_size
    signature = BaseModelSignature.of(model)
    torch.manual_seed(1)
    shapes = [("mlp", 8, "last"), ("linear", 64, "last+mean"), ("mlp", 16, "last+mean"), ("linear", 64, "last")]
    heads = random_heads(signature, [*shapes, ("mlp", 8, "last+mean")])
    stack = HeadStack()
    sources = [stack.add(head, name=head.config.name) for head in heads]
    hidden, mean = torch.randn(3, 5, hidden_size), torch.randn(3, 5, hidden_size)
    batch = candidates_with(3, 5, base_hidden=hidden, base_hidden_mean=mean)
    for head, source in zip(heads, sources, strict=True):
        assert source.name == head.config.name
        alone = head(hidden) if head.config.features == "last" else head(torch.cat([hidden, mean], -1))
        assert torch.allclose(source.start(prompts=None).score(batch), alone, atol=1e-5)
        assert torch.allclose(HeadReward(head).start(prompts=None).score(batch), alone, atol=1e-5)
    # a head added later joins the next step's computation; a new hidden state is scored afresh
    late = RewardHead(RewardHeadConfig(name="late", hidden_size=hidden_size, base_signature=signature))
    late_source = stack.add(late)
    other = torch.randn(3, 5, hidden_size)
    batch.base_hidden = other
    assert torch.allclose(late_source.start(prompts=None).score(batch), late(other), atol=1e-5)
    assert torch.allclose(sources[0].start(prompts=None).score(batch), heads[0](other), atol=1e-5)


def test_prefix_and_candidate_heads_share_a_stack_and_a_step_without_candidate_states(tiny_models):
    """A user's stack may hold both kinds of head: each reads its own inputs; prefix+token heads are scored from the
    state before the candidates and their embeddings alone (the first layer's prefix part once per row), and a step
    that ran no candidate forward scores them without it."""
    model = AutoModelForCausalLM.from_pretrained(tiny_models.base)
    hidden_size = model.config.hidden_size
    signature = BaseModelSignature.of(model)
    torch.manual_seed(2)
    kinds = [("mlp", 8, "prefix+token"), ("linear", 8, "last+mean"), ("linear", 8, "prefix+token"), ("mlp", 8, "last")]
    heads = random_heads(signature, kinds)
    stack = HeadStack()
    sources = [stack.add(head) for head in heads]
    assert [s.needs_base_hidden for s in sources] == [False, True, False, True]
    assert [s.needs_prefix_hidden for s in sources] == [True, False, True, False]
    batch, k = 2, 4
    prefix, prefix_mean = torch.randn(batch, hidden_size), torch.randn(batch, hidden_size)
    hidden, mean, tokens = (torch.randn(batch, k, hidden_size) for _ in range(3))
    before = {"prefix_hidden": prefix, "prefix_mean": prefix_mean, "candidate_embeddings": tokens}
    full = candidates_with(batch, k, step=3, base_hidden=hidden, base_hidden_mean=mean, **before)
    expand = torch.Tensor.expand
    by_kind = {
        "prefix+token": torch.cat(
            [expand(prefix[:, None], -1, k, -1), expand(prefix_mean[:, None], -1, k, -1), tokens], -1
        ),
        "last+mean": torch.cat([hidden, mean], -1),
        "last": hidden,
    }
    for head, source in zip(heads, sources, strict=True):
        alone = head(by_kind[head.config.features])
        assert torch.allclose(source.start(prompts=None).score(full), alone, atol=1e-5)
        assert torch.allclose(HeadReward(head).start(prompts=None).score(full), alone, atol=1e-5)
    prefix_only = candidates_with(batch, k, step=3, **before)
    for i in (0, 2):
        expected = heads[i](by_kind["prefix+token"])
        assert torch.allclose(sources[i].start(prompts=None).score(prefix_only), expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="candidate hidden states"):
        HeadReward(heads[1]).start(prompts=None).score(prefix_only)
