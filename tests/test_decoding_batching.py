"""Batches of rows with their own weights and lambdas, rows that end early, sampling, dtypes and the registry."""

from __future__ import annotations

import threading

import pytest
import torch
from test_decoding import make_head

from panda_chat.decoding import PandaDecoder
from panda_chat.lam.base import ConstantLambda
from panda_chat.registry import ModelRegistry
from panda_chat.rewards.base import Calibration, CandidateBatch, PromptBatch, RewardSession, RewardSource

PROMPTS = ["The cat", "A student compares linear algebra", "Your garden enjoys the weather politely. It took 7"]


@pytest.fixture(scope="module")
def decoder(tiny_models) -> PandaDecoder:
    dec = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32")
    dec = PandaDecoder(dec.model, dec.tokenizer)
    dec.add_reward("formal", make_head(dec.model, "formal", seed=0))
    dec.add_reward("simple", make_head(dec.model, "simple", seed=1, calibration=Calibration(mean=-1.0, std=0.5)))
    dec.add_reward("helpful", str(tiny_models.reward_model))
    return dec


class EosAfter(RewardSource):
    """A test reward that pushes the EOS token hard from a given step on, per row (to end rows deterministically).

    It keeps per-row state, so it also checks that the decoder tells sessions which rows remain (``select_rows``).
    """

    def __init__(self, eos_id: int, from_step: list[int], drop_rows: bool = True):
        self.name, self.calibration, self.eos_id = "eos_after", Calibration(), eos_id
        self.from_step, self.drop_rows = from_step, drop_rows

    def start(self, prompts: PromptBatch) -> RewardSession:
        # A session that cannot select rows makes the decoder keep finished rows in the batch until all are done.
        session_class = _EosSession if self.drop_rows else _EosSessionWithoutRowSelection
        return session_class(self.eos_id, torch.tensor(self.from_step))


class _EosSession(RewardSession):
    can_select_rows = True

    def __init__(self, eos_id: int, from_step: torch.Tensor):
        self.eos_id, self.from_step = eos_id, from_step

    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        assert len(candidates.generated_ids) == candidates.candidate_ids.shape[0] == len(self.from_step)
        due = (candidates.step >= self.from_step)[:, None]
        return ((candidates.candidate_ids == self.eos_id) & due).float() * 100.0

    def select_rows(self, rows: torch.Tensor) -> None:
        self.from_step = self.from_step[rows]


class _EosSessionWithoutRowSelection(RewardSession):
    def __init__(self, eos_id: int, from_step: torch.Tensor):
        self.eos_id, self.from_step = eos_id, from_step

    score = _EosSession.score


def test_a_batch_equals_its_rows_run_one_by_one_with_per_row_weights_and_lambdas(decoder):
    weights = [{"formal": 1.0}, {"simple": 0.8, "helpful": 0.3}, {"formal": -0.5, "simple": 0.5}]

    def ramp(context, step):  # a schedule: rises with t, different per row through the prompt length
        return 0.1 * step * context.prompt_lengths.float() / context.prompt_lengths.float().max()

    lambdas = [2.0, ramp, ConstantLambda(1.5)]
    batched = decoder.generate(PROMPTS, weights=weights, lam=lambdas, max_new_tokens=40, stop_at_eos=False)
    for i, prompt in enumerate(PROMPTS):
        lam = lambdas[i] if not callable(lambdas[i]) or isinstance(lambdas[i], ConstantLambda) else None
        if lam is None:  # the ramp depends on the batch's longest prompt: give the single row the same value
            longest = max(len(decoder.tokenizer(p)["input_ids"]) for p in PROMPTS)
            mine = len(decoder.tokenizer(prompt)["input_ids"])

            def lam(context, step, mine=mine, longest=longest):
                return torch.full((1,), 0.1 * step * mine / longest)

        (single,) = decoder.generate(prompt, weights=weights[i], lam=lam, max_new_tokens=40, stop_at_eos=False)
        assert batched[i].token_ids == single.token_ids
        assert batched[i].rewards == pytest.approx(single.rewards, abs=1e-4)
        assert batched[i].text == single.text
    assert batched[0].lambdas == [2.0] * 40 and batched[2].lambdas == [1.5] * 40
    # The per-row weights matter: row 0 with row 2's weights decodes differently.
    (swapped,) = decoder.generate(PROMPTS[0], weights=weights[2], lam=2.0, max_new_tokens=40, stop_at_eos=False)
    assert swapped.token_ids != batched[0].token_ids


@pytest.mark.parametrize("drop_rows", [True, False], ids=["rows-dropped", "rows-kept"])
def test_rows_end_at_eos_independently(decoder, drop_rows):
    eos = decoder.tokenizer.eos_token_id
    prompts = ["The river", "A student compares linear algebra", "My neighbour builds"]  # no EOS of their own
    stopper = EosAfter(eos, from_step=[3, 30, 10], drop_rows=drop_rows)
    weights = {"eos_after": 1.0}  # no head here: k is the whole vocabulary, so EOS is always a candidate
    outputs = decoder.generate(
        prompts,
        rewards={"eos_after": stopper},
        weights=weights,
        lam=1.0,
        top_k=len(decoder.tokenizer),
        max_new_tokens=20,
    )
    assert [o.finish_reason for o in outputs] == ["eos", "length", "eos"]
    assert [len(o.token_ids) for o in outputs] == [4, 20, 11]
    assert outputs[0].token_ids[-1] == eos and eos not in outputs[1].token_ids
    assert len(outputs[0].rewards) == len(outputs[0].lambdas) == 4
    assert decoder.tokenizer.eos_token not in outputs[0].text
    # Each row is what it would be alone: an early-ending neighbour changes nothing.
    for i, prompt in enumerate(prompts):
        alone = EosAfter(eos, from_step=[stopper.from_step[i]])
        (single,) = decoder.generate(
            prompt,
            rewards={"eos_after": alone},
            weights=weights,
            lam=1.0,
            top_k=len(decoder.tokenizer),
            max_new_tokens=20,
        )
        assert single.token_ids == outputs[i].token_ids
    # Without stop_at_eos, the EOS token is just another token.
    kept = decoder.generate(
        prompts[0],
        rewards={"eos_after": EosAfter(eos, [3])},
        weights=weights,
        top_k=len(decoder.tokenizer),
        max_new_tokens=6,
        stop_at_eos=False,
    )[0]
    assert kept.finish_reason == "length" and len(kept.token_ids) == 6


def test_sampling_is_reproducible_with_a_seed_and_stays_in_the_top_k(decoder):
    kwargs = dict(weights={"formal": 1.0}, lam=1.0, greedy=False, temperature=1.5, max_new_tokens=16)
    first = decoder.generate(PROMPTS, seed=7, **kwargs)
    again = decoder.generate(PROMPTS, seed=7, **kwargs)
    other = decoder.generate(PROMPTS, seed=8, **kwargs)
    assert [o.token_ids for o in first] == [o.token_ids for o in again]
    assert [o.token_ids for o in first] != [o.token_ids for o in other]
    greedy = decoder.generate(PROMPTS, weights={"formal": 1.0}, lam=1.0, max_new_tokens=16)
    assert [o.token_ids for o in first] != [o.token_ids for o in greedy]
    # With k = 1 there is nothing to sample: the same as greedy top-1, whatever the seed.
    top1 = decoder.generate(PROMPTS, lam=0.0, top_k=1, greedy=False, seed=3, max_new_tokens=20, stop_at_eos=False)
    plain = decoder.generate(PROMPTS, lam=0.0, max_new_tokens=20, stop_at_eos=False)
    assert [o.token_ids for o in top1] == [o.token_ids for o in plain]


def test_token_id_prompts_and_text_prompts_decode_the_same(decoder):
    ids = [decoder.tokenizer(p)["input_ids"] for p in PROMPTS]
    from_text = decoder.generate(PROMPTS, weights={"simple": 1.0}, lam=2.0, max_new_tokens=12)
    from_ids = decoder.generate(ids, weights={"simple": 1.0}, lam=2.0, max_new_tokens=12)
    assert [o.token_ids for o in from_text] == [o.token_ids for o in from_ids]
    assert [o.prompt_tokens for o in from_ids] == [len(i) for i in ids]
    (single,) = decoder.generate(ids[1], weights={"simple": 1.0}, lam=2.0, max_new_tokens=12)
    assert single.token_ids == from_ids[1].token_ids


def test_weights_default_to_every_reward_and_missing_names_weigh_zero(decoder):
    everything = {"formal": 1.0, "simple": 1.0, "helpful": 1.0}
    a = decoder.generate(PROMPTS[1], lam=1.0, max_new_tokens=10)[0]
    b = decoder.generate(PROMPTS[1], weights=everything, lam=1.0, max_new_tokens=10)[0]
    assert a.token_ids == b.token_ids and set(a.raw_rewards) == set(everything)
    c = decoder.generate(PROMPTS[1], weights={"formal": 1.0}, lam=1.0, max_new_tokens=10)[0]
    d = decoder.generate(
        PROMPTS[1], weights={"formal": 1.0, "simple": 0.0, "helpful": 0.0}, lam=1.0, max_new_tokens=10
    )[0]
    assert c.token_ids == d.token_ids and set(c.raw_rewards) == {"formal"}  # unweighted rewards are not scored


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_decodes_with_heads_and_reward_models(tiny_models, dtype):
    registry = ModelRegistry()
    float_model = registry.causal_lm(tiny_models.base, device="cpu", dtype="float32").model
    dec = PandaDecoder.from_pretrained(
        tiny_models.base,
        rewards={"formal": make_head(float_model), "helpful": str(tiny_models.reward_model)},
        device="auto",
        dtype=dtype,
        registry=registry,
    )
    assert dec.model.dtype == getattr(torch, dtype) and dec.device.type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    assert dec.rewards["helpful"].model.dtype == dec.model.dtype
    outputs = dec.generate(
        PROMPTS, weights={"formal": 1.0, "helpful": 1.0}, lam=1.0, max_new_tokens=8, stop_at_eos=False
    )
    assert all(len(o.token_ids) == 8 and all(r == r for r in o.rewards) for o in outputs)


def test_registry_loads_each_model_once_even_from_many_threads(tiny_models):
    registry = ModelRegistry()
    results = []

    def load():
        results.append(registry.causal_lm(tiny_models.base, device="cpu", dtype="float32"))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(r is results[0] for r in results) and len(registry) == 1
    via_relative_path = registry.causal_lm(str(tiny_models.base) + "/.", device="cpu", dtype="float32")
    assert via_relative_path is results[0]
    assert registry.causal_lm(tiny_models.base, device="cpu", dtype="bfloat16") is not results[0]
    first = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32", registry=registry)
    second = PandaDecoder.from_pretrained(tiny_models.base, device="cpu", dtype="float32", registry=registry)
    assert first.model is second.model is results[0].model
