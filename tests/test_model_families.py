"""PANDA is exact on every popular decoder family: the engine against the naive loop on the model's own forward.

For each family of ``model_families`` (tiny random-init configs, sliding windows shorter than prompt+answer, scaled and
soft-capped logits set far from neutral), in float32:

- steered greedy decoding with a reward head and, where ``transformers`` has one, a reward model: the same tokens and
  the same raw reward per chosen token as ``reference_decode`` (no cache; ``model(...).logits`` on prefix+candidate),
  for a left-padded batch and for a single prompt;
- lambda = 0 and no reward at all: exactly ``model.generate(do_sample=False)``;
- seeded sampling: the same draws as the naive sampler with the same generator (lambda 1 and lambda 0, where the
  latter is the model's own distribution over the top k);
- the load-time check picks the expected path (tree, or general for ALiBi), and forcing the general path agrees too.

Select with ``-m families``; it is part of the default run.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import torch
from model_families import FAMILIES, FAMILY_BY_NAME, Family

from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.base_model import BaseModelSession
from panda_chat.decoding.engine import DecodingOptions
from panda_chat.decoding.reference import reference_decode
from panda_chat.rewards.heads import BaseModelSignature, HeadFeatures, RewardHead, RewardHeadConfig
from panda_chat.rewards.reward_model import CachedRewardModel
from panda_chat.serving import BatchScheduler, DecodeRequest
from panda_chat.tiny_models import sample_corpus, train_tokenizer
from panda_chat.tree_attention import prefill_position_ids

pytestmark = pytest.mark.families

TOP_K, NEW_TOKENS, LAM = 5, 8, 2.0
PROMPT_LENGTHS = (9, 3, 6)  # with the window of 6: shorter, equal and longer than it once the answer is added
WEIGHTS = {"head": 1.0, "prefix": -0.7, "rm": 0.5}

CASES = [pytest.param(family, family.path, id=f"{family.name}") for family in FAMILIES] + [
    pytest.param(FAMILY_BY_NAME[name], "general", id=f"{name}@general-forced")
    for name in ("llama", "gemma2", "mistral-v0.1-window", "cohere2")
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(sample_corpus(n_sentences=300), vocab_size=300)


def make_head(model, seed: int = 0, scale: float = 20.0, features: HeadFeatures = "last+mean") -> RewardHead:
    """A random linear head on the model's (text) hidden size, scaled so that it changes which tokens win. The two
    kinds bootstrap and the demo make: ``"prefix+token"`` (no candidate forward) and ``"last+mean"`` (the
    candidates' own states and the answer's running mean)."""
    torch.manual_seed(seed)
    config = RewardHeadConfig(
        name="head",
        hidden_size=model.config.get_text_config().hidden_size,
        features=features,
        base_signature=BaseModelSignature.of(model),
    )
    head = RewardHead(config)
    with torch.no_grad():
        head.net.weight.mul_(scale)
    return head.eval()


def prompts_for(vocab_size: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(10, vocab_size, (n,), generator=generator).tolist() for n in PROMPT_LENGTHS]


def build(family: Family, tokenizer, path: str, dtype: torch.dtype = torch.float32):
    model = family.build(len(tokenizer)).to(dtype)
    decoder = PandaDecoder(model, tokenizer, path=path if path == "general" else "auto")
    rewards = {"head": make_head(model).to(dtype), "prefix": make_head(model, 2, features="prefix+token").to(dtype)}
    decoder.add_reward("head", rewards["head"])
    decoder.add_reward("prefix", rewards["prefix"])
    if family.sequence_classifier is not None:
        reward_model = family.build(len(tokenizer), seed=1, reward_model=True).to(dtype)
        rewards["rm"] = reward_model
        decoder.add_reward("rm", CachedRewardModel(reward_model, "rm", path=path if path == "general" else "auto"))
    return model, decoder, rewards


def _zero(context, step) -> torch.Tensor:
    """A lambda function that returns 0: it cannot be skipped up front, so the candidates still run."""
    return torch.zeros(len(context.prompts))


def assert_same_as_reference(model, decoder, rewards, prompts, outputs, **sampling):
    weights = {name: WEIGHTS[name] for name in rewards}
    lam = sampling.pop("lam", LAM)
    for prompt, output in zip(prompts, outputs):
        tokens, raw = reference_decode(
            model, prompt, rewards, weights, lam, top_k=TOP_K, max_new_tokens=NEW_TOKENS, **sampling
        )
        assert output.token_ids == tokens
        for name in output.raw_rewards:  # none are scored when lambda is the constant 0
            torch.testing.assert_close(
                torch.tensor(output.raw_rewards[name]), torch.tensor(raw[name]), atol=1e-4, rtol=1e-3
            )


@pytest.mark.parametrize(("family", "path"), CASES)
def test_family_decodes_exactly_like_its_own_forward(family: Family, path: str, tokenizer):
    model, decoder, rewards = build(family, tokenizer, path)
    assert decoder.path == path
    if "rm" in rewards:
        assert decoder.rewards["rm"].path == path
    prompts = prompts_for(len(tokenizer))
    weights = {name: WEIGHTS[name] for name in rewards}
    options = {"top_k": TOP_K, "max_new_tokens": NEW_TOKENS, "stop_at_eos": False}

    # Steered greedy: a left-padded batch, and one prompt alone.
    batch = decoder.generate(prompts, weights=weights, lam=LAM, **options)
    assert_same_as_reference(model, decoder, rewards, prompts, batch)
    (alone,) = decoder.generate(prompts[0], weights=weights, lam=LAM, **options)
    assert alone.token_ids == batch[0].token_ids

    # lambda = 0 through the candidate forward, and no reward at all: the model's own greedy decoding.
    encoded = decoder.encode_prompts(prompts)
    expected = model.generate(
        input_ids=encoded.input_ids,
        attention_mask=encoded.attention_mask,
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
    )[:, encoded.input_ids.shape[1] :].tolist()
    through_candidates = decoder.generate(prompts, weights={"head": 1.0}, lam=_zero, **options)
    unsteered = decoder.generate(prompts, lam=0.0, **options)
    assert [o.token_ids for o in through_candidates] == expected
    assert [o.token_ids for o in unsteered] == expected

    # Seeded sampling: the very draws of the naive sampler, steered and unsteered.
    for lam, seed in ((1.0, 3), (0.0, 4)):
        (sampled,) = decoder.generate(prompts[1], weights=weights, lam=lam, greedy=False, seed=seed, **options)
        assert_same_as_reference(model, decoder, rewards, prompts[1:2], [sampled], lam=lam, temperature=1.0, seed=seed)


@pytest.mark.parametrize("name", ["llama", "bloom", "mpt"])
def test_bfloat16_smoke_run_on_each_path(name: str, tokenizer):
    """Also: in bfloat16 the check still tells MPT's slot-biased ALiBi from rounding noise."""
    family = FAMILY_BY_NAME[name]
    _, decoder, _ = build(family, tokenizer, "auto", dtype=torch.bfloat16)
    assert decoder.path == family.path
    outputs = decoder.generate(
        prompts_for(len(tokenizer)), weights=WEIGHTS, lam=LAM, top_k=TOP_K, max_new_tokens=4, stop_at_eos=False
    )
    for output in outputs:
        assert len(output.token_ids) == 4
        assert all(torch.isfinite(torch.tensor(values)).all() for values in output.raw_rewards.values())


def test_the_general_path_is_announced_once_and_the_tree_path_refused(tokenizer, caplog):
    model = FAMILY_BY_NAME["mpt"].build(len(tokenizer))
    with caplog.at_level(logging.DEBUG, logger="panda_chat.tree_attention"):
        first = PandaDecoder(model, tokenizer)
        second = PandaDecoder(model, tokenizer)
    assert first.path == second.path == "general"
    announcements = [r for r in caplog.records if "general path" in r.getMessage()]
    assert len(announcements) == 1 and "MptForCausalLM" in announcements[0].getMessage()
    with pytest.raises(ValueError, match="tree path is not exact for MptForCausalLM"):
        PandaDecoder(model, tokenizer, path="tree")
    reward_model = FAMILY_BY_NAME["mpt"].build(len(tokenizer), reward_model=True)
    assert CachedRewardModel(reward_model, "rm").path == "general"
    with pytest.raises(ValueError, match="tree path is not exact for MptForSequenceClassification"):
        CachedRewardModel(reward_model, "rm", path="tree")


@pytest.mark.parametrize("name", ["llama", "gemma2", "qwen3-next"])
def test_both_paths_prefill_to_the_same_logits_and_prompt_features(name: str, tokenizer):
    """Lambda functions read the prompt features: the general path (backbone, then the full model on the last prompt
    token) gives the tree path's, and both give the model's own next-token logits."""
    model = FAMILY_BY_NAME[name].build(len(tokenizer))
    decoder = PandaDecoder(model, tokenizer)
    batch = decoder.encode_prompts(prompts_for(len(tokenizer)))
    with torch.inference_mode():
        own = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=prefill_position_ids(batch.attention_mask),
        ).logits[:, -1]
        results = {
            path: BaseModelSession(model, path).prefill(batch.input_ids, batch.attention_mask)
            for path in ("tree", "general")
            if path == "general" or decoder.path == "tree"
        }
    for logits, features in results.values():
        torch.testing.assert_close(logits, own, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(features, results["general"][1], atol=1e-5, rtol=1e-4)


# One family per mechanism the batch cache must keep per row: plain, biased and grouped attention, sliding windows
# (alone and mixed with full layers), soft-capped and scaled logits, partial rotary, learned positions, ALiBi and
# MPT's biases on the general path, and a hybrid recurrent model whose cache cannot be merged (decoded alone).
SCHEDULER_FAMILIES = [
    "llama", "qwen2", "mistral-v0.1-window", "gemma2", "gemma3-multimodal", "phi", "gpt2", "gpt-neox", "falcon",
    "cohere2", "gpt-oss", "bloom", "mpt", "qwen3-next",
]  # fmt: skip
UNMERGEABLE = {"qwen3-next"}  # linear-attention state: each request is decoded alone, the answers still equal


# Heads of both kinds (a candidate forward, and the rows' prefix states merged); prefix heads alone on a few families
# (no candidate forward: the rows' last states and plain steps of the joined batch)
JOIN_CASES = [(name, {"head": 1.0, "prefix": -0.7}) for name in SCHEDULER_FAMILIES] + [
    (name, {"prefix": 1.0}) for name in ("llama", "gemma2", "bloom", "qwen3-next")
]


@pytest.mark.parametrize(("name", "weights"), JOIN_CASES, ids=[f"{n}-{'+'.join(w)}" for n, w in JOIN_CASES])
def test_requests_joining_a_running_batch_get_the_answer_they_get_alone(name: str, weights, tokenizer):
    """Continuous batching on each family: request 1 joins the running batch after request 0's first steps and
    request 2 after request 1's, with prompts of different lengths; every greedy answer equals the decoder's alone."""
    family = FAMILY_BY_NAME[name]
    model = family.build(len(tokenizer))
    decoder = PandaDecoder(model, tokenizer)
    decoder.add_reward("head", make_head(model))
    decoder.add_reward("prefix", make_head(model, 2, features="prefix+token"))
    prompts = prompts_for(len(tokenizer))
    lengths = (12, 9, 6)  # request 0 outlives the others: they join, and leave, a batch still decoding
    options = {"top_k": TOP_K, "stop_at_eos": False}
    alone = [
        decoder.generate(prompt, weights=weights, lam=LAM, max_new_tokens=n, **options)[0]
        for prompt, n in zip(prompts, lengths)
    ]

    scheduler = BatchScheduler(decoder)
    done: dict[int, Any] = {}
    submitted = {0}
    finished = threading.Event()

    def lam_of(index: int):
        """LAM at every step; at step 2 (in the scheduler thread, before the step) it submits the next request.
        Steps, not text pieces: a random model's byte tokens may hold all their text back until the end."""

        def lam(context, step: int) -> torch.Tensor:
            if step == 2:
                submit_next(index)
            return torch.full((len(context.prompts),), LAM)

        return lam

    def request(index: int) -> DecodeRequest:
        options = DecodingOptions(top_k=TOP_K, max_new_tokens=lengths[index], stop_at_eos=False)
        return DecodeRequest(prompt=prompts[index], options=options, weights=weights, lam=lam_of(index))

    def submit_next(index: int) -> None:  # from the sinks: in the scheduler thread, between two steps
        if index + 1 < len(prompts) and index + 1 not in submitted:
            submitted.add(index + 1)
            scheduler.submit(request(index + 1), sink_of(index + 1))

    def sink_of(index: int):
        def sink(kind: str, value) -> None:
            if kind == "piece":
                return
            done[index] = value
            submit_next(index)  # in case it ended before its second piece
            if len(done) == len(prompts):
                finished.set()

        return sink

    scheduler.submit(request(0), sink_of(0))
    assert finished.wait(timeout=120), f"only {sorted(done)} finished"
    scheduler.close()
    for index, expected in enumerate(alone):
        assert done[index].token_ids == expected.token_ids
        # the rewards too: a joining row reads its own answer's mean and last state, not a running row's
        for reward in weights:
            torch.testing.assert_close(
                torch.tensor(done[index].raw_rewards[reward]),
                torch.tensor(expected.raw_rewards[reward]),
                atol=1e-4,
                rtol=1e-3,
            )
    if name in UNMERGEABLE:
        assert scheduler.stats.solo_requests == len(prompts) - 1
    else:
        # every step of every answer ran in the shared batch, and at least one request joined it mid-decode
        assert scheduler.stats.solo_requests == 0 and scheduler.stats.row_steps == sum(lengths)
        assert scheduler.stats.max_rows >= 2
