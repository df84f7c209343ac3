"""One scheduler per model: the only owner of its forward passes, with continuous batching across requests.

Requests from any thread (HTTP handlers, ChatPanda calls) are ``submit``-ted; one scheduler thread runs the decode
loop. At every step boundary it

1. drops rows whose request was cancelled (a client went away) or finished, and trims padding nobody needs;
2. admits waiting requests: they are prefilled together and their cache rows merged into the running batch
   (``batch_cache.merge``), up to ``max_batch`` rows;
3. runs ONE PANDA step for every row (``PandaDecoder``'s algorithm, per row: its own top-k, weights, lambda,
   temperature, seed, stop strings and token budget), and hands each row's new text to its request.

Rows therefore join at the next step and leave the step they finish. The engine's pieces are reused as they are:
``BaseModelSession`` (prefill, tree-masked candidate forward, keep), ``SteeringPlan`` (per-row weights, calibration,
lambda), ``StopTracker`` (stop strings, incremental text), ``choose``.

Only rewards whose sessions hold no per-prompt state can share a batch whose rows come and go: reward heads on the
base model's hidden states (every embedded-model pole, every per-user head). A request that needs another kind (an
external reward model with its own KV cache, a text reward) is decoded on its own, through ``PandaDecoder.generate``,
between two steps of the batch: still one owner of the model, just not batched.

Greedy rows decode the same tokens alone or batched (padding is masked, positions are per row). Sampling draws from
a per-request generator seeded with the request's seed, so a seeded answer does not depend on its batch either.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Unpack, cast

import torch

from panda_chat.decoding import PandaDecoder
from panda_chat.decoding.base_model import BaseModelSession
from panda_chat.decoding.engine import DecodingError, DecodingOptions, DecodingOverrides
from panda_chat.decoding.outputs import GenerationOutput
from panda_chat.decoding.steering import LambdaSpec, SteeringPlan, combine_rewards
from panda_chat.decoding.stopping import StopTracker
from panda_chat.lam.base import LambdaContext, LambdaFunction
from panda_chat.rewards.base import RewardSession, RewardSource
from panda_chat.rewards.heads import HeadReward
from panda_chat.rewards.loading import RewardOrPath
from panda_chat.serving import batch_cache

log = logging.getLogger("panda_chat.serving")
EventKind = Literal["piece", "done", "error"]
Sink = Callable[[EventKind, object], None]


class RequestCancelled(RuntimeError):
    """The request was cancelled before it finished (its client went away)."""


@dataclass
class DecodeRequest:
    """One prompt to answer: the per-row arguments of ``PandaDecoder.generate``."""

    prompt: str | Sequence[int]
    options: DecodingOptions = field(default_factory=DecodingOptions)
    weights: Mapping[str, float] | None = None  # None: every reward of the request with weight 1 (as generate)
    lam: float | LambdaFunction = 1.0
    rewards: Mapping[str, RewardOrPath] = field(default_factory=dict)
    preference_features: Sequence[float] | None = None
    add_special_tokens: bool | None = None


class RequestHandle:
    """What ``submit`` returns: cancel it to free its batch row at the next step.

    ``caller_cancelled`` is the caller's own event (e.g. set when an ``ainvoke`` task is cancelled): the scheduler
    thread reads it at every step, so the row is freed at the next step without waiting for the caller's thread.
    """

    def __init__(self, caller_cancelled: threading.Event | None = None) -> None:
        self._cancelled = threading.Event()
        self.caller_cancelled = caller_cancelled
        self._followers: list[RequestHandle] = []

    def cancel(self) -> None:
        self._cancelled.set()
        for follower in self._followers:
            follower.cancel()

    def follow(self, other: RequestHandle) -> None:
        """Cancel ``other`` with this one: the request was handed on to another scheduler, which made ``other``."""
        self._followers.append(other)
        if self._cancelled.is_set():
            other.cancel()

    @property
    def cancelled(self) -> bool:
        caller = self.caller_cancelled
        return self._cancelled.is_set() or (caller is not None and caller.is_set())


@dataclass
class PreparedRequest:
    """A request checked and encoded (``BatchScheduler.prepare``): what the scheduler thread decodes. It pickles,
    so the server process prepares a request once and its engine process decodes it as it is."""

    request: DecodeRequest
    prompt_ids: list[int]
    prompt_text: str
    options: DecodingOptions
    plan: SteeringPlan  # one row
    preference_features: torch.Tensor | None  # (1, P)
    batchable: bool  # every reward a head: it can join a running batch


@dataclass
class _Admitted(PreparedRequest):
    """A prepared request waiting for (or decoding in) the scheduler thread."""

    handle: RequestHandle = field(default_factory=RequestHandle)
    sink: Sink = field(default=lambda kind, value: None)
    ended: bool = False

    def end(self, kind: EventKind, value: object) -> None:
        """Hand the request its one final event ("done" or "error")."""
        if not self.ended:
            self.ended = True
            self.sink(kind, value)


# A reward source in the running batch: its name and the object itself. Rows of different users may bring different
# sources under one name (a head retrained between two requests, two catalogs configuring one pole differently):
# each row is scored by its own. The scheduler holds every source of the batch, so an id is never reused meanwhile.
SourceKey = tuple[str, int]


def source_key(source: RewardSource) -> SourceKey:
    return (source.name, id(source))


@dataclass
class _Row:
    """A request decoding in the running batch."""

    job: _Admitted
    context: LambdaContext
    tracker: StopTracker
    generator: torch.Generator | None
    started: float
    step: int = 0
    rewards: list[float] = field(default_factory=list)
    lambdas: list[float] = field(default_factory=list)
    raw: dict[str, list[float]] = field(default_factory=dict)

    @cached_property
    def keys(self) -> list[SourceKey]:
        return [source_key(source) for source in self.job.plan.sources]

    @cached_property
    def weights(self) -> dict[SourceKey, float]:
        """The row's steering weight per reward source."""
        plan = self.job.plan
        return {source_key(source): float(plan.weights[0, j]) for j, source in enumerate(plan.sources)}


@dataclass
class SchedulerStats:
    """Counters for tests and benchmarks: how many steps ran and how many rows the largest one had."""

    steps: int = 0
    row_steps: int = 0
    max_rows: int = 0
    solo_requests: int = 0
    cancelled: int = 0


class RequestScheduler(ABC):
    """What ChatPanda and the server decode through: requests in, text pieces and one output each out.

    ``BatchScheduler`` runs the decode loop in a thread of this process; ``EngineClient``
    (``panda_chat.serving.engine_process``) sends the requests to the same loop in a process of its own, whose
    steps then never wait for this process's Python work (HTTP, the profile store) to give up the GIL.
    """

    max_batch: int
    stats: SchedulerStats

    @abstractmethod
    def submit_group(
        self, requests: Sequence[DecodeRequest], sinks: Sequence[Sink], cancelled: threading.Event | None = None
    ) -> list[RequestHandle]:
        """Validate and queue ``requests``; each sink gets its request's pieces, then "done" or "error"."""

    @abstractmethod
    def close(self) -> None:
        """Stop decoding; requests still waiting or running get an error."""

    @property
    @abstractmethod
    def running_rows(self) -> int:
        """Rows in the running batch now."""

    def submit(self, request: DecodeRequest, sink: Sink, cancelled: threading.Event | None = None) -> RequestHandle:
        """One request (see ``submit_group``)."""
        return self.submit_group([request], [sink], cancelled)[0]

    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        weights: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
        options: DecodingOptions | None = None,
        lam: LambdaSpec = 1.0,
        add_special_tokens: bool | None = None,
        rewards: Mapping[str, RewardOrPath] | None = None,
        preference_features: torch.Tensor | None = None,
        on_token: Callable[[int, str], None] | None = None,
        cancelled: threading.Event | None = None,
        **overrides: Unpack[DecodingOverrides],
    ) -> list[GenerationOutput]:
        """``PandaDecoder.generate``'s contract, served by the scheduler: each prompt becomes one request that shares
        steps with every other caller's. Blocks until all are done; ``on_token(row, piece)`` runs in this thread,
        and an exception it raises cancels the call's requests (their rows are freed at the next step). Setting
        ``cancelled`` frees them at the next step too, and this call then raises ``RequestCancelled``."""
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        count = len(texts)
        per_weights = [weights] * count if weights is None or isinstance(weights, Mapping) else list(weights)
        per_lam = list(lam) if isinstance(lam, Sequence) and not isinstance(lam, str) else [lam] * count
        if len(per_weights) != count or len(per_lam) != count:
            raise ValueError(f"give one weights dict and one lambda, or one per prompt ({count} prompts)")
        if preference_features is not None and preference_features.shape[0] != count:
            raise DecodingError("preference_features must have one row per prompt")
        options = DecodingOptions.of(options, **overrides)
        events: queue.Queue[tuple[int, EventKind, Any]] = queue.Queue()

        def sink_of(row: int) -> Sink:
            return lambda kind, value: events.put((row, kind, value))

        requests = [
            DecodeRequest(
                prompt=text,
                options=options,
                weights=per_weights[row],
                lam=per_lam[row],
                rewards=dict(rewards or {}),
                add_special_tokens=add_special_tokens,
                preference_features=None if preference_features is None else preference_features[row].tolist(),
            )
            for row, text in enumerate(texts)
        ]
        handles = self.submit_group(requests, [sink_of(row) for row in range(count)], cancelled)
        try:
            outputs: list[GenerationOutput | None] = [None] * count
            while any(output is None for output in outputs):
                try:
                    row, kind, value = events.get(timeout=0.05)
                except queue.Empty:
                    if cancelled is not None and cancelled.is_set():
                        raise RequestCancelled("the caller cancelled this decode") from None
                    continue
                if kind == "piece":
                    if on_token is not None:
                        on_token(row, value)
                elif kind == "done":
                    outputs[row] = value
                else:
                    raise value
            return cast(list[GenerationOutput], outputs)  # the loop above ends once every row has its output
        finally:
            for handle in handles:
                handle.cancel()  # a no-op for finished requests; frees the others' rows on any early exit


class BatchScheduler(RequestScheduler):
    """The owner of one ``PandaDecoder``'s forward passes (see the module docstring).

    ``max_batch`` caps the rows decoded together (1 decodes one request at a time: the benchmark's baseline).
    ``lock`` is held around every step, so other users of the same model (likelihood scoring) never interleave
    with a forward pass.
    """

    def __init__(self, decoder: PandaDecoder, *, max_batch: int = 32, lock: threading.RLock | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.decoder = decoder
        self.max_batch = max_batch
        self.lock = lock or threading.RLock()
        self.stats = SchedulerStats()
        self._waiting: queue.Queue[list[_Admitted] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._rows: list[_Row] = []
        self._policy: BaseModelSession | None = None
        self._logits: torch.Tensor | None = None
        self._sources: dict[SourceKey, RewardSource] = {}
        self._sessions: dict[SourceKey, RewardSession] = {}

    # ------------------------------------------------------------------------------------------------ public API

    def submit_group(
        self, requests: Sequence[DecodeRequest], sinks: Sequence[Sink], cancelled: threading.Event | None = None
    ) -> list[RequestHandle]:
        """Validate ``requests`` (raising ``DecodingError``/``ValueError`` here, in the caller's thread) and queue them.

        Each ``sink(kind, value)`` is called from the scheduler thread with ("piece", str) as text becomes final,
        then once with ("done", GenerationOutput) or ("error", exception). It must be quick and must not raise.
        Setting ``cancelled`` (or cancelling a handle) frees the requests' rows at the next step. Requests whose
        rewards cannot share a changing batch are decoded together, on their own (see the module docstring).
        """
        return self.submit_prepared([self.prepare(request) for request in requests], sinks, cancelled)

    def submit_prepared(
        self, prepared: Sequence[PreparedRequest], sinks: Sequence[Sink], cancelled: threading.Event | None = None
    ) -> list[RequestHandle]:
        """Queue requests already checked and encoded by ``prepare`` (here or in another process)."""
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        jobs = [
            _Admitted(**vars(ready), handle=RequestHandle(cancelled), sink=sink)
            for ready, sink in zip(prepared, sinks, strict=True)
        ]
        if all(job.batchable for job in jobs):
            for job in jobs:
                self._enqueue([job])
        else:
            self._enqueue(jobs)
        return [job.handle for job in jobs]

    def _enqueue(self, group: list[_Admitted]) -> None:
        self._ensure_thread()
        self._waiting.put(group)

    def prepare(self, request: DecodeRequest) -> PreparedRequest:
        """``request`` checked (``DecodingError``/``ValueError`` for a bad one) and encoded for the decode loop."""
        features = None
        if request.preference_features is not None and len(request.preference_features):
            features = torch.tensor([list(request.preference_features)], dtype=torch.float32)
        call = self.decoder.prepare(
            [request.prompt] if isinstance(request.prompt, str) else [list(request.prompt)],
            request.options,
            weights=[request.weights] if request.weights is not None else None,
            lam=[request.lam],
            add_special_tokens=request.add_special_tokens,
            rewards=request.rewards,
            preference_features=features,
        )
        batch, plan, options = call.batch, call.plan, call.options
        return PreparedRequest(
            prompt_ids=batch.input_ids[0].tolist(),
            prompt_text=batch.texts[0],
            options=options,
            plan=plan,
            request=request,
            preference_features=features,
            batchable=all(isinstance(source, HeadReward) for source in plan.sources),
        )

    def close(self) -> None:
        """Stop the scheduler thread after the current step; requests still waiting or running get an error."""
        self._closed = True
        self._waiting.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def running_rows(self) -> int:
        return len(self._rows)

    # ------------------------------------------------------------------------------------------------ the loop

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="panda-scheduler", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        # MKL keeps its thread count per thread: without this, this thread's matrix products use every core, whatever
        # the process set (``--threads``), and compete with the request threads for them.
        torch.set_num_threads(torch.get_num_threads())
        with torch.inference_mode():
            while True:
                groups = self._take_waiting(block=not self._rows)
                if groups is None:
                    self._fail_all(RuntimeError("the scheduler was closed"))
                    return
                try:
                    with self.lock:
                        self._drop_cancelled()
                        self._admit(groups)
                        if self._rows:
                            self._step()
                except Exception as error:
                    log.error("a decoding step failed; its rows get the error", exc_info=True)
                    self._fail_all(error)
                    for job in (job for group in groups for job in group):
                        job.end("error", error)

    def _take_waiting(self, block: bool) -> list[list[_Admitted]] | None:
        """Groups of requests to admit now (about the free rows; the rest wait). None when closing."""
        groups: list[list[_Admitted]] = []
        free = self.max_batch - len(self._rows)
        if block:
            group = self._waiting.get()
            if group is None:
                return None
            groups.append(group)
            free -= len(group)
        while free > 0:
            try:
                group = self._waiting.get_nowait()
            except queue.Empty:
                break
            if group is None:
                return None
            groups.append(group)
            free -= len(group)
        return groups

    def _fail_all(self, error: Exception) -> None:
        for row in self._rows:
            row.job.end("error", error)
        self._reset()

    def _reset(self) -> None:
        self._rows, self._policy, self._logits = [], None, None
        self._sources, self._sessions = {}, {}

    def _drop_cancelled(self) -> None:
        self._keep_rows([i for i, row in enumerate(self._rows) if not self._cancelled(row.job)])

    def _keep_rows(self, keep: list[int]) -> None:
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._reset()
            return
        if self._policy is None or self._logits is None:
            raise RuntimeError("scheduler: running rows without a batch state")
        index = torch.tensor(keep, device=self.decoder.device)
        self._policy.select_rows(index)
        batch_cache.trim_left(self._policy)
        self._logits = self._logits[index]
        self._rows = [self._rows[i] for i in keep]
        live = {key for row in self._rows for key in row.keys}  # sessions of departed rows' sources go with them
        for key in [key for key in self._sessions if key not in live]:
            del self._sessions[key], self._sources[key]

    def _admit(self, groups: list[list[_Admitted]]) -> None:
        batched = []
        for group in groups:
            group = [job for job in group if not self._cancelled(job)]
            if len(group) == 1 and group[0].batchable and self.max_batch > 1:
                batched.append(group[0])
            elif group:
                self._run_alone(group)
        if not batched:
            return
        decoder = self.decoder
        prompts = decoder.encode_prompts([job.prompt_ids for job in batched])
        policy = BaseModelSession(decoder.model)
        logits, prompt_features = policy.prefill(prompts.input_ids, prompts.attention_mask)
        if self._policy is not None and not batch_cache.can_merge(policy):
            for job in batched:  # this model's cache cannot be merged: one request at a time
                self._run_alone([job])
            return
        lengths = prompts.attention_mask.sum(-1).cpu()
        now = time.perf_counter()
        for i, job in enumerate(batched):
            eos = decoder.eos_token_ids() if job.options.stop_at_eos else set()
            seed = job.options.seed
            self._rows.append(
                _Row(
                    job=job,
                    context=LambdaContext(
                        prompts=[job.prompt_text],
                        prompt_lengths=lengths[i : i + 1],
                        prompt_features=prompt_features[i : i + 1],
                        preference_features=job.preference_features,
                    ),
                    tracker=StopTracker(decoder.tokenizer, 1, eos, job.options.stop, track_text=True),
                    generator=torch.Generator(device=decoder.device).manual_seed(seed) if seed is not None else None,
                    started=now,
                    raw={source.name: [] for source in job.plan.sources},
                )
            )
            for source in job.plan.sources:
                key = source_key(source)
                if key not in self._sessions:
                    self._sources[key] = source
                    self._sessions[key] = source.start(prompts)  # heads: stateless sessions
        if self._policy is None or self._logits is None:
            self._policy, self._logits = policy, logits
        else:
            batch_cache.merge(self._policy, policy)
            self._logits = torch.cat([self._logits, logits], dim=0)

    def _cancelled(self, job: _Admitted) -> bool:
        if job.handle.cancelled:
            self.stats.cancelled += 1
            job.end("error", RequestCancelled("the request was cancelled"))
        return job.handle.cancelled

    def _run_alone(self, group: list[_Admitted]) -> None:
        """Decode a group of requests by themselves with the engine, as one padded batch (rewards that cannot share
        a changing batch). The group's options are the same (one ``generate`` call made it)."""
        self.stats.solo_requests += len(group)
        options = group[0].options
        names = {*self.decoder.rewards, *(name for job in group for name in job.request.rewards)}
        features = [job.preference_features for job in group if job.preference_features is not None]
        same_width = len(features) == len(group) and all(f.shape == features[0].shape for f in features)

        def on_token(row: int, piece: str) -> None:
            if any(job.handle.cancelled for job in group):
                raise RequestCancelled("the request was cancelled")
            group[row].sink("piece", piece)

        try:
            outputs = self.decoder.generate(
                [job.prompt_ids for job in group],
                weights=[
                    job.request.weights if job.request.weights is not None else dict.fromkeys(names, 1.0)
                    for job in group
                ],
                lam=[job.request.lam for job in group],
                rewards={name: spec for job in group for name, spec in job.request.rewards.items()},
                preference_features=torch.cat(features) if same_width else None,
                options=options,
                on_token=on_token,
            )
        except Exception as error:  # noqa: BLE001 - handed to the requests (RequestCancelled included)
            for job in group:
                job.end("error", error)
            return
        for job, output in zip(group, outputs, strict=True):
            job.end("done", output)

    def _step(self) -> None:
        """One PANDA step for every running row (see ``panda_chat.decoding.engine`` for the algorithm)."""
        rows, policy, device = self._rows, self._policy, self.decoder.device
        if policy is None or self._logits is None:
            raise RuntimeError("scheduler: a step without a running batch")
        self.stats.steps += 1
        self.stats.row_steps += len(rows)
        self.stats.max_rows = max(self.stats.max_rows, len(rows))
        logits = self._logits.float()
        k = max(row.job.options.top_k for row in rows)
        top_logits, candidate_ids = logits.topk(k, dim=-1)  # 1. Z = top-k of pi_b (the widest row's k)
        candidate_logp = top_logits - logits.logsumexp(dim=-1, keepdim=True)
        lam = self._lambdas(rows).to(device)
        keys = sorted({key for row in rows for key in row.keys})
        sources = [self._sources[key] for key in keys]
        tree = any(source.needs_base_hidden for source in sources)  # a forward of the k candidates, then keep
        if keys:
            candidates = policy.candidate_batch(
                candidate_ids,
                sources,
                step=min(row.step for row in rows),
                generated_ids=[row.tracker.rows[0].token_ids for row in rows],
                active=torch.ones(len(rows), dtype=torch.bool, device=device),
            )
            raw = torch.stack([self._sessions[key].score(candidates) for key in keys], dim=-1)  # 2. (B, k, R)
            weights = torch.tensor([[row.weights.get(key, 0.0) for key in keys] for row in rows], device=device)
            means = torch.tensor([source.calibration.mean for source in sources], device=device)
            stds = torch.tensor([source.calibration.std for source in sources], device=device)
            reward = combine_rewards(raw, means, stds, weights)
            scores = candidate_logp + lam[:, None] * reward  # 3. s(z) = log p(z) + lambda * r(z)
        else:
            raw = candidate_logp[..., :0]
            reward = torch.zeros_like(candidate_logp)
            scores = candidate_logp
        for i, row in enumerate(rows):  # a row with a smaller k never picks beyond its own top-k
            if row.job.options.top_k < k:
                scores[i, row.job.options.top_k :] = float("-inf")
        chosen = self._choose(scores, rows)
        for key in keys:
            self._sessions[key].commit(chosen)
        tokens = candidate_ids.gather(-1, chosen[:, None]).squeeze(-1)
        self._record(rows, keys, tokens, chosen, lam, reward, raw)
        self._logits = policy.keep(chosen) if tree else policy.advance(tokens)  # 4. next step's logits
        finished = [i for i, row in enumerate(rows) if row.tracker.rows[0].finish_reason is not None]
        for i in finished:
            self._finish(rows[i])
        if finished:
            self._keep_rows([i for i in range(len(rows)) if i not in set(finished)])

    @staticmethod
    def _lambdas(rows: list[_Row]) -> torch.Tensor:
        """lambda(x, t) per row (B,): constants as they are; a lambda function is called once for all the rows
        that use it at the same step (rows that joined together), on their stacked contexts, or once for all its
        rows when it takes each row's own step (``at_steps``, as ``LearnedLambda`` does)."""
        values = torch.tensor([_constant(row.job.request.lam) for row in rows])
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(rows):
            lam = row.job.request.lam
            if not isinstance(lam, (int, float)):
                features = row.context.preference_features
                step = None if hasattr(lam, "at_steps") else row.step
                groups.setdefault((id(lam), step, None if features is None else features.shape[1]), []).append(i)
        for (_, step, width), members in groups.items():
            contexts = [rows[i].context for i in members]
            context = LambdaContext(
                prompts=[text for c in contexts for text in c.prompts],
                prompt_lengths=torch.cat([c.prompt_lengths for c in contexts]),
                prompt_features=torch.cat([c.prompt_features for c in contexts]),
                preference_features=None
                if width is None
                else torch.cat(
                    [c.preference_features for c in contexts if c.preference_features is not None]  # all, same width
                ),
            )
            function = cast(LambdaFunction, rows[members[0]].job.request.lam)  # constants were handled above
            if step is None:
                steps = torch.tensor([rows[i].step for i in members])
                out = torch.as_tensor(function.at_steps(context, steps), dtype=torch.float32)  # type: ignore[attr-defined]
            else:
                out = torch.as_tensor(function(context, step), dtype=torch.float32)
            out = out.detach().cpu().reshape(-1)
            out = out.expand(len(members)) if out.numel() == 1 else out
            if not bool((out >= 0).all()):
                at = f"step {step}" if step is not None else f"steps {sorted({rows[i].step for i in members})}"
                raise ValueError(f"lambda function {function!r} returned a negative or NaN value at {at}")
            values[members] = out
        return values

    def _choose(self, scores: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """Per row: argmax (greedy) or a draw from softmax(scores / T) with the row's own generator."""
        chosen = scores.argmax(dim=-1)
        for i, row in enumerate(rows):
            options = row.job.options
            if not options.greedy:
                probs = torch.softmax(scores[i : i + 1] / options.temperature, dim=-1)
                chosen[i] = torch.multinomial(probs, 1, generator=row.generator)[0, 0]
        return chosen

    def _record(
        self,
        rows: list[_Row],
        keys: list[SourceKey],
        tokens: torch.Tensor,
        chosen: torch.Tensor,
        lam: torch.Tensor,
        reward: torch.Tensor,
        raw: torch.Tensor,
    ) -> None:
        """Append each row's token, reward and lambda (one host sync for the batch); hand out the new text."""
        index = chosen[:, None]
        columns = [tokens.float()[:, None], lam[:, None].float(), reward.gather(-1, index)]
        if keys:
            columns.append(raw.gather(1, index[..., None].expand(-1, 1, raw.shape[-1])).squeeze(1))
        values = torch.cat(columns, dim=-1).tolist()
        column = {key: 3 + j for j, key in enumerate(keys)}
        for row, row_values in zip(rows, values, strict=True):
            row.lambdas.append(row_values[1])
            row_keys = row.keys
            row.rewards.append(row_values[2] if row_keys else 0.0)
            for key in row_keys:
                row.raw[key[0]].append(row_values[column[key]])
            pieces = row.tracker.update([int(row_values[0])], [0])
            if row.step == row.job.options.max_new_tokens - 1:
                pieces += row.tracker.finish_by_length()
            row.step += 1
            for _, piece in pieces:
                row.job.sink("piece", piece)

    def _finish(self, row: _Row) -> None:
        state = row.tracker.rows[0]
        row.job.end(
            "done",
            GenerationOutput(
                text=row.tracker.final_text(0),
                token_ids=state.token_ids,
                rewards=row.rewards,
                lambdas=row.lambdas,
                raw_rewards=row.raw,
                finish_reason=state.final_reason,
                prompt_tokens=len(row.job.prompt_ids),
                elapsed_s=time.perf_counter() - row.started,
            ),
        )


def _constant(lam: float | LambdaFunction) -> float:
    """A constant lambda's value; 0.0 for a lambda function (its rows are filled in by calling it)."""
    return float(lam) if isinstance(lam, (int, float)) else 0.0
