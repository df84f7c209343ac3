"""The batch scheduler: requests join a running batch and leave it, and every answer is the one it gets alone."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.engine import DecodingOptions
from panda_chat.rewards.base import (
    Calibration,
    CandidateBatch,
    PromptBatch,
    RewardSession,
    RewardSource,
)
from panda_chat.rewards.heads import HeadReward, RewardHead
from panda_chat.serving import BatchScheduler, DecodeRequest, RequestCancelled

PROMPTS = [
    "Explain photosynthesis.",
    "What is a black hole? Tell me more about it, in some detail please.",
    "Hi",
    "How do I bake bread at home?",
    "Why is the sky blue?",
    "Give me three tips for learning the violin as an adult beginner.",
]
WEIGHTS = [
    {"expert": 1.0},
    {"concise": 2.0, "friendly": 1.0},
    {},
    {"detailed": 1.0, "formal": 0.5},
    {"elementary": 1.5},
    {"friendly": 1.0},
]


@pytest.fixture(scope="module")
def demo():
    from panda_chat.demo import demo_head_paths, demo_model_dir

    decoder = PandaDecoder.from_pretrained(str(demo_model_dir()), device="cpu", dtype="float32")
    heads = {pole: HeadReward(RewardHead.load(path), pole) for pole, path in demo_head_paths().items()}
    return decoder, heads


def _alone(decoder, heads, index: int, **options):
    return decoder.generate(PROMPTS[index], weights=WEIGHTS[index], rewards=heads, lam=2.0, **options)[0]


def test_greedy_answers_are_the_same_alone_and_joining_a_running_batch(demo):
    decoder, heads = demo
    scheduler = BatchScheduler(decoder)
    results: dict[int, object] = {}

    def ask(index: int) -> None:
        time.sleep(0.03 * index)  # staggered: later requests join a batch that is already decoding
        results[index] = scheduler.generate(
            PROMPTS[index],
            weights=WEIGHTS[index],
            rewards=heads,
            lam=2.0,
            max_new_tokens=20 + 3 * index,
            stop_at_eos=index % 2 == 0,
        )[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert scheduler.stats.max_rows > 1 and scheduler.stats.solo_requests == 0  # they did share steps
    for index in range(len(PROMPTS)):
        alone = _alone(decoder, heads, index, max_new_tokens=20 + 3 * index, stop_at_eos=index % 2 == 0)
        got = results[index]
        assert got.token_ids == alone.token_ids and got.text == alone.text
        assert got.finish_reason == alone.finish_reason
        assert got.rewards == pytest.approx(alone.rewards, abs=1e-4)
        assert got.lambdas == pytest.approx(alone.lambdas, abs=1e-5)
    scheduler.close()


def test_a_learned_lambda_gives_rows_at_different_steps_what_they_get_alone(demo):
    """Rows that joined at different times are at different steps: one call of the learned lambda serves them all
    (``at_steps``), with each row's own step and preferences."""
    from panda_chat.demo import demo_lambda_path
    from panda_chat.lam.learned import LearnedLambda

    decoder, heads = demo
    lam = LearnedLambda.load(demo_lambda_path())
    features = torch.rand(4, lam.config.preference_dim, generator=torch.Generator().manual_seed(0))
    scheduler = BatchScheduler(decoder)
    results: dict[int, object] = {}

    def arguments(index: int) -> dict:
        return {
            "weights": WEIGHTS[index],
            "rewards": heads,
            "lam": lam,
            "preference_features": features[index : index + 1],
            "max_new_tokens": 16,
            "stop_at_eos": False,
        }

    def ask(index: int) -> None:
        time.sleep(0.05 * index)
        results[index] = scheduler.generate(PROMPTS[index], **arguments(index))[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert scheduler.stats.max_rows > 1
    for index in range(4):
        alone = decoder.generate(PROMPTS[index], **arguments(index))[0]
        assert results[index].token_ids == alone.token_ids
        assert results[index].lambdas == pytest.approx(alone.lambdas, abs=1e-5)
    scheduler.close()


def test_rows_keep_their_own_options_in_one_batch(demo):
    """top_k, stop strings, seeded sampling and token budgets are per request, as if each ran alone."""
    decoder, heads = demo
    scheduler = BatchScheduler(decoder)
    asks = [
        {"top_k": 3, "max_new_tokens": 12},
        {"top_k": 10, "max_new_tokens": 25, "stop": ["e"]},
        {"top_k": 10, "greedy": False, "temperature": 1.3, "seed": 7, "max_new_tokens": 16},
        {"top_k": 10, "max_new_tokens": 5, "stop_at_eos": False},
    ]
    events: list[list] = [[] for _ in asks]
    done = threading.Semaphore(0)

    def sink(index):
        def receive(kind, value):
            events[index].append((kind, value))
            if kind != "piece":
                done.release()

        return receive

    for index, options in enumerate(asks):
        request = DecodeRequest(
            prompt=PROMPTS[index], options=DecodingOptions(**options), weights=WEIGHTS[index], lam=2.0, rewards=heads
        )
        scheduler.submit(request, sink(index))
    for _ in asks:
        assert done.acquire(timeout=120)
    for index, options in enumerate(asks):
        kind, output = events[index][-1]
        assert kind == "done"
        alone = _alone(decoder, heads, index, **options)
        assert output.token_ids == alone.token_ids and output.text == alone.text
        assert "".join(value for kind, value in events[index] if kind == "piece") == alone.text
    scheduler.close()


def test_a_cancelled_request_leaves_the_batch_at_the_next_step(demo):
    decoder, heads = demo
    scheduler = BatchScheduler(decoder)
    first_piece, finished = threading.Event(), threading.Event()
    cancelled, other_output = [], []  # one list each: the other row may finish before or after the cancel

    def sink(kind, value):
        if kind == "piece":
            first_piece.set()
        else:
            cancelled.append(value)
            finished.set()

    long = DecodeRequest(
        prompt=PROMPTS[0],
        options=DecodingOptions(max_new_tokens=500, stop_at_eos=False),
        weights=WEIGHTS[0],
        lam=2.0,
        rewards=heads,
    )
    handle = scheduler.submit(long, sink)
    other = threading.Thread(
        target=lambda: other_output.append(
            scheduler.generate(PROMPTS[1], weights=WEIGHTS[1], rewards=heads, lam=2.0, max_new_tokens=40)[0]
        )
    )
    other.start()
    assert first_piece.wait(timeout=60)
    steps_at_cancel = scheduler.stats.steps
    handle.cancel()
    assert finished.wait(timeout=60)
    assert isinstance(cancelled[0], RequestCancelled)
    assert scheduler.stats.steps - steps_at_cancel <= 2 and scheduler.stats.cancelled == 1
    other.join(timeout=120)
    assert other_output[0].token_ids == _alone(decoder, heads, 1, max_new_tokens=40).token_ids  # the other row went on
    assert scheduler.running_rows == 0
    scheduler.close()


class _ConstantSession(RewardSession):
    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        return candidates.candidate_ids.float() / 1000.0  # favours larger token ids: visibly steers


class _ConstantReward(RewardSource):
    """A reward that is not a head: it cannot join a changing batch, so the scheduler decodes it on its own."""

    name = "ids"
    calibration = Calibration()

    def start(self, prompts: PromptBatch) -> RewardSession:
        return _ConstantSession()


def test_rewards_that_cannot_share_a_batch_are_decoded_alone_with_the_engine(demo):
    decoder, _ = demo
    scheduler = BatchScheduler(decoder)
    reward = {"ids": _ConstantReward()}
    got = scheduler.generate(PROMPTS[:2], rewards=reward, lam=3.0, max_new_tokens=10)
    expected = decoder.generate(PROMPTS[:2], rewards=reward, lam=3.0, max_new_tokens=10)
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    assert scheduler.stats.solo_requests == 2 and scheduler.stats.steps == 0
    scheduler.close()


def test_bad_requests_fail_in_the_callers_thread(demo):
    decoder, heads = demo
    scheduler = BatchScheduler(decoder)
    with pytest.raises(ValueError, match="unknown reward"):
        scheduler.generate("hi", weights={"no-such-pole": 1.0}, rewards=heads)
    with pytest.raises(ValueError, match="top_k"):
        scheduler.generate("hi", top_k=0)
    scheduler.close()


def test_rows_with_different_rewards_under_one_name_are_each_scored_by_their_own(demo):
    """Two users' requests may bring different sources under one reward name (a head retrained between requests,
    two catalogs configuring one pole differently): in one batch each row is scored by its own, as alone."""
    decoder, heads = demo
    mine = HeadReward(heads["expert"].head, "style")
    theirs = HeadReward(heads["elementary"].head, "style")
    prompt, options = PROMPTS[0], {"max_new_tokens": 24, "stop_at_eos": False, "lam": 6.0, "weights": {"style": 1.0}}
    alone = {
        source: decoder.generate(prompt, rewards={"style": source}, **options)[0].token_ids for source in (mine, theirs)
    }
    assert alone[mine] != alone[theirs]  # the two heads steer this prompt differently

    scheduler = BatchScheduler(decoder)
    done: dict[int, object] = {}
    finished = threading.Event()

    def sink_of(index: int):
        def sink(kind, value):
            if kind != "piece":
                done[index] = value
                if len(done) == 2:
                    finished.set()

        return sink

    requests = [
        DecodeRequest(
            prompt=prompt,
            options=DecodingOptions(max_new_tokens=24, stop_at_eos=False),
            weights={"style": 1.0},
            lam=6.0,
            rewards={"style": source},
        )
        for source in (mine, theirs)
    ]
    scheduler.submit_group(requests, [sink_of(0), sink_of(1)])
    assert finished.wait(timeout=120)
    scheduler.close()
    assert scheduler.stats.max_rows == 2  # they shared the steps
    assert [done[0].token_ids, done[1].token_ids] == [alone[mine], alone[theirs]]
