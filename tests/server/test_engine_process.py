"""The decode loop in an engine process: the same answers as the decoder alone, the shared objects sent once, and
what happens when a request is cancelled, is bad, cannot be sent, or when the engine dies."""

from __future__ import annotations

import gc
import os
import queue
import signal
import threading
import time

import pytest
import torch
from candidates import candidates_with

from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.engine import DecodingError, DecodingOptions
from panda_chat.lam.learned import LearnedLambda
from panda_chat.rewards.base import Calibration, CandidateBatch, PromptBatch, RewardSession, RewardSource
from panda_chat.rewards.heads import HeadStack, RewardHead
from panda_chat.serving import BatchScheduler, DecodeRequest, RequestCancelled
from panda_chat.serving.engine_process import EngineClient, EngineProcessError, EngineSpec, _Mirror, _MirrorTable

pytestmark = pytest.mark.slow

PROMPTS = ["Explain photosynthesis.", "What is a black hole?", "Hi", "How do I bake bread at home?"]
WEIGHTS = [{"expert": 1.0}, {"concise": 2.0, "friendly": 1.0}, {}, {"formal": 1.0, "elementary": 0.5}]


@pytest.fixture(scope="module")
def demo():
    from panda_chat.demo import demo_head_paths, demo_model_dir

    path = str(demo_model_dir())
    decoder = PandaDecoder.from_pretrained(path, device="cpu", dtype="float32")
    lam = LearnedLambda.load(demo_model_dir().parent / "lambda.safetensors")
    return path, decoder, demo_head_paths(), lam


@pytest.fixture(scope="module")
def client(demo):
    path, decoder, _, _ = demo
    engine = EngineClient(
        EngineSpec(model=path, device="cpu", dtype="float32", max_batch=8, threads=1),
        local=BatchScheduler(decoder, max_batch=8),
    )
    yield engine
    engine.close()


def _features(lam: LearnedLambda) -> torch.Tensor | None:
    width = lam.config.preference_dim
    return torch.linspace(-1, 1, width)[None] if width else None


def test_answers_from_the_engine_equal_the_decoder_alone_while_the_head_stack_grows(demo, client):
    _, decoder, head_paths, lam = demo
    stack = HeadStack()
    heads = {}
    results: dict[int, object] = {}

    def arguments(index: int) -> dict:
        rewards = {name: heads[name] for name in WEIGHTS[index]}
        return dict(
            weights=WEIGHTS[index], rewards=rewards, lam=lam, preference_features=_features(lam), max_new_tokens=24
        )

    def ask(index: int) -> None:
        results[index] = client.generate(PROMPTS[index], **arguments(index))[0]

    threads = []
    for index in range(len(PROMPTS)):
        for name in WEIGHTS[index]:  # poles join the stack as requests first need them (as ChatPanda's do)
            if name not in heads:
                heads[name] = stack.add(RewardHead.load(head_paths[name]), name)
        threads.append(threading.Thread(target=ask, args=(index,)))
        threads[-1].start()
        time.sleep(0.05)  # later requests join a batch that is already decoding
    for thread in threads:
        thread.join(timeout=300)
    assert client.stats.max_rows > 1  # they shared steps in the engine
    for index in range(len(PROMPTS)):
        alone = decoder.generate(PROMPTS[index], **arguments(index))[0]
        got = results[index]
        assert got.token_ids == alone.token_ids and got.text == alone.text
        assert got.finish_reason == alone.finish_reason
        assert got.lambdas == pytest.approx(alone.lambdas, abs=1e-5)


def test_shared_objects_cross_once_keep_their_identity_and_are_dropped_when_let_go(demo):
    _, _, head_paths, lam = demo
    mirror, table = _Mirror(), _MirrorTable()
    stack = HeadStack()
    first = stack.add(RewardHead.load(head_paths["expert"]), "expert")
    one = mirror.dumps({"rewards": {"expert": first}, "lam": lam})
    two = mirror.dumps({"rewards": {"expert": first}, "lam": lam})
    assert len(two) < len(one) / 10  # the second time only keys cross
    a, b = table.loads(one), table.loads(two)
    assert a["rewards"]["expert"] is b["rewards"]["expert"] and a["lam"] is b["lam"]
    there = a["rewards"]["expert"].stack
    second = stack.add(RewardHead.load(head_paths["formal"]), "formal")  # the stack grows here...
    c = table.loads(mirror.dumps({"rewards": {"formal": second}}))
    assert c["rewards"]["formal"].stack is there and len(there) == 2  # ...and its copy there, in place
    hidden, mean = torch.randn(2, 3, 5, there._heads[0].config.hidden_size)
    candidates = candidates_with(3, 5, base_hidden=hidden, base_hidden_mean=mean)
    assert torch.allclose(there.scores(candidates), stack.scores(candidates), atol=1e-6)
    dropped_before = len(mirror.dropped)
    del first, a, b, c, second, there, stack
    gc.collect()
    assert len(mirror.dropped) > dropped_before  # the engine is told to let its copies go too


def test_a_cancelled_request_gets_request_cancelled_and_frees_its_row(client):
    events: queue.Queue = queue.Queue()
    cancelled = threading.Event()
    request = DecodeRequest(
        "Tell me a very long story about a dragon.", DecodingOptions(max_new_tokens=400, stop_at_eos=False)
    )
    client.submit(request, lambda kind, value: events.put((kind, value)), cancelled)
    assert events.get(timeout=120)[0] == "piece"
    cancelled.set()
    kind, value = events.get(timeout=60)
    while kind == "piece":
        kind, value = events.get(timeout=60)
    assert kind == "error" and isinstance(value, RequestCancelled)
    for _ in range(600):
        if client.running_rows == 0:
            break
        time.sleep(0.05)
    assert client.running_rows == 0


def test_a_bad_request_raises_in_the_callers_thread_as_with_the_thread_scheduler(demo, client):
    _, decoder, _, _ = demo
    bad = DecodeRequest(prompt="")
    with pytest.raises(DecodingError) as in_thread:
        BatchScheduler(decoder).submit(bad, lambda kind, value: None)
    with pytest.raises(DecodingError) as in_engine:
        client.submit(bad, lambda kind, value: None)
    assert str(in_engine.value) == str(in_thread.value)


class _LockedReward(RewardSource):
    """A reward that cannot be pickled (it holds a lock): it cannot cross to the engine process."""

    def __init__(self) -> None:
        self.name = "locked"
        self.calibration = Calibration()
        self.lock = threading.Lock()

    def start(self, prompts: PromptBatch) -> RewardSession:
        return _LengthSession()


class _LengthSession(RewardSession):
    def score(self, candidates: CandidateBatch) -> torch.Tensor:
        return candidates.candidate_ids.float() % 7


def test_a_request_that_cannot_be_sent_is_decoded_in_this_process(demo, client):
    _, decoder, _, _ = demo
    reward = _LockedReward()
    got = client.generate(
        "Why is the sky blue?", weights={"locked": 1.0}, rewards={"locked": reward}, lam=1.0, max_new_tokens=12
    )[0]
    alone = decoder.generate(
        "Why is the sky blue?", weights={"locked": 1.0}, rewards={"locked": reward}, lam=1.0, max_new_tokens=12
    )[0]
    assert got.token_ids == alone.token_ids


def test_a_killed_engine_fails_its_requests_and_the_next_request_starts_a_new_one(client):
    events: queue.Queue = queue.Queue()
    request = DecodeRequest(
        "Tell me a very long story about a castle.", DecodingOptions(max_new_tokens=400, stop_at_eos=False)
    )
    client.submit(request, lambda kind, value: events.put((kind, value)))
    assert events.get(timeout=120)[0] == "piece"
    old_pid = client.pid
    assert old_pid is not None and old_pid != os.getpid()
    os.kill(old_pid, signal.SIGKILL)
    kind, value = events.get(timeout=60)
    while kind == "piece":
        kind, value = events.get(timeout=60)
    assert kind == "error" and isinstance(value, EngineProcessError)
    answer = client.generate("Hi", max_new_tokens=5)[0]
    assert answer.completion_tokens == 5
    assert client.pid != old_pid and client.restarts == 1


class _ImportableHereOnly(RewardSource):
    """A reward the engine process cannot unpickle: this test module is not importable there."""

    def __init__(self) -> None:
        self.name = "here-only"
        self.calibration = Calibration()

    def start(self, prompts: PromptBatch) -> RewardSession:
        return _LengthSession()


def test_a_request_the_engine_cannot_read_is_decoded_in_this_process_and_the_engine_serves_on(demo, client):
    _, decoder, _, _ = demo
    reward = _ImportableHereOnly()
    ask = dict(weights={"here-only": 1.0}, rewards={"here-only": reward}, lam=1.0, max_new_tokens=12)
    solo_before = client.local.stats.solo_requests
    got = client.generate("Why is the sky blue?", **ask)[0]
    assert got.token_ids == decoder.generate("Why is the sky blue?", **ask)[0].token_ids
    assert client.local.stats.solo_requests == solo_before + 1  # the in-process scheduler decoded it
    assert client.generate("Hi", max_new_tokens=5)[0].completion_tokens == 5  # the engine is still there


def test_the_servers_auto_engine_is_a_process_on_the_cpu_and_a_thread_on_an_accelerator():
    from panda_chat.server.app import engine_kind

    assert engine_kind("auto", torch.device("cpu")) == "process"
    assert engine_kind("auto", torch.device("cuda", 0)) == "thread"  # one copy of the weights in GPU memory
    assert engine_kind("auto", torch.device("mps")) == "thread"
    assert engine_kind("thread", torch.device("cpu")) == "thread"
    assert engine_kind("process", torch.device("cuda")) == "process"
