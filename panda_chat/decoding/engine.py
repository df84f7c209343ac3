"""PandaDecoder: decode with pi*(z | x, y<t) ∝ exp(log pi_b(z) + lambda(x, t) * r([x, y<t, z]))
(docs/ARCHITECTURE.md, "One chat turn", step 6).

Every step of ``_decode`` is the algorithm, in order:

1. Z = the top-k tokens of the base model's log-probs;
2. each reward source scores every candidate z in Z: ``"prefix+token"`` reward heads read the base model's hidden
   state before z, its mean over the answer so far and z's embedding, which the decoder already has; heads on z's
   own hidden state (and the mean over the answer plus z) need one tree-masked forward of the k candidates, or on the
   general path one ordinary step of the cache repeated k times; an external reward model runs its own cached
   forward of the candidates;
   the rewards are calibrated, clipped at +-2 std and combined with the row's weights:
   r = sum_j w_j * clip((r_j - mean_j) / std_j) (``steering.combine_rewards``);
3. s(z) = log p(z) + lambda(x, t) * r(z); greedy takes argmax s, sampling draws from softmax(s / temperature) over Z;
4. the chosen token is appended: after a candidate forward the caches keep the chosen candidate only, and the next
   step's logits come from it; otherwise the base model runs the chosen token, as plain decoding does.

The caching tricks are in ``panda_chat.tree_attention`` and ``base_model.BaseModelSession``, stopping and
incremental text in ``stopping``, per-row weights and lambdas in ``steering``; ``reference.reference_generate`` is the
naive loop this engine must agree with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict, Unpack, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from panda_chat.decoding.base_model import BaseModelSession, resolve_path
from panda_chat.decoding.limits import check_context
from panda_chat.decoding.outputs import GenerationOutput, TextStream
from panda_chat.decoding.steering import LambdaSpec, SteeringPlan, WeightsSpec
from panda_chat.decoding.stopping import StopTracker
from panda_chat.lam.base import LambdaContext
from panda_chat.padding import left_pad, pad_token_id
from panda_chat.prompt_format import encode_prompt
from panda_chat.registry import ModelRegistry, shared_registry
from panda_chat.rewards.base import PromptBatch, RewardSession, RewardSource, supports_row_selection
from panda_chat.rewards.loading import RewardOrPath, load_reward
from panda_chat.tree_attention import Path as DecodingPath

Prompts = str | Sequence[int] | Sequence[str | Sequence[int]]  # one prompt (text or token ids), or several
TokenCallback = Callable[[int, str], None]
# (rows still decoding, each one's tokens so far) -> which tokens each may take next, (B, V) bool, or (B, V) scores
# added to the logits (-inf forbids), or None for all. Applied before the top-k, so constrained decoding (JSON
# schemas, tool calls) keeps PANDA's re-scoring of the candidates intact.
TokenFilter = Callable[[list[int], list[list[int]]], "torch.Tensor | None"]


class DecodingError(ValueError):
    """A generate request that cannot be decoded as asked (empty prompt, k larger than the vocabulary, ...)."""


class LengthAndStopOverrides(TypedDict, total=False):
    """The ``DecodingOptions`` fields other than how to pick a candidate (``from_temperature`` sets those)."""

    top_k: int
    max_new_tokens: int
    seed: int | None
    stop_at_eos: bool
    stop: str | Sequence[str] | None


class DecodingOverrides(LengthAndStopOverrides, total=False):
    """The ``DecodingOptions`` fields a call may give as keyword arguments (``generate(..., top_k=5)``)."""

    greedy: bool
    temperature: float


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode: the one home of these settings, their defaults and their validation.

    ``PandaDecoder.generate`` / ``stream`` and ``BatchScheduler.generate`` take ``options=`` and/or the same fields
    as keyword overrides (``DecodingOverrides``); ``of`` merges the two. ``stop`` accepts one string, a sequence or
    None and is kept as a tuple.
    """

    top_k: int = 10
    max_new_tokens: int = 128
    greedy: bool = True
    temperature: float = 1.0
    seed: int | None = None
    stop_at_eos: bool = True
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        stop: str | Sequence[str] | None = self.stop
        object.__setattr__(self, "stop", () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop))

    @classmethod
    def of(cls, options: DecodingOptions | None = None, **overrides: Unpack[DecodingOverrides]) -> DecodingOptions:
        """``options`` (the defaults when None) with ``overrides`` applied: what every decoding entry point uses."""
        base = options if options is not None else cls()
        # ``replace`` runs ``__post_init__``, which turns a str/sequence/None ``stop`` into the tuple the field holds
        return replace(base, **cast("dict[str, Any]", overrides)) if overrides else base

    @classmethod
    def from_temperature(
        cls, temperature: float, options: DecodingOptions | None = None, **overrides: Unpack[LengthAndStopOverrides]
    ) -> DecodingOptions:
        """Options for an API-style temperature: 0 is greedy (argmax), T > 0 samples from softmax(score / T).

        The one place that maps a chat temperature to ``greedy``/``temperature`` (ChatPanda, the server, the CLI).
        """
        if temperature < 0:
            raise DecodingError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if temperature == 0:
            return cls.of(options, greedy=True, temperature=1.0, **overrides)
        return cls.of(options, greedy=False, temperature=temperature, **overrides)

    def validate(self, vocab_size: int) -> None:
        if self.top_k < 1:
            raise DecodingError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_k > vocab_size:
            raise DecodingError(f"top_k={self.top_k} is larger than the base model's vocabulary ({vocab_size} tokens)")
        if self.max_new_tokens < 1:
            raise DecodingError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise DecodingError(f"temperature must be > 0, got {self.temperature}")


def choose(scores: torch.Tensor, options: DecodingOptions, generator: torch.Generator | None) -> torch.Tensor:
    """Index of the chosen candidate per row (B,): argmax of the scores, or a draw from softmax(scores / T)."""
    if options.greedy:
        return scores.argmax(dim=-1)
    probs = torch.softmax(scores / options.temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass(frozen=True)
class PreparedCall:
    """One validated decode call (``PandaDecoder.prepare``): its encoded prompts, steering and options."""

    batch: PromptBatch
    plan: SteeringPlan  # on the decoder's device
    options: DecodingOptions
    preference_features: torch.Tensor | None  # (B, P)


class PandaDecoder:
    """A base causal LM plus named reward sources; ``generate`` decodes batches of prompts with PANDA.

    ``model`` is any ``transformers`` causal LM with a KV cache (see the README's supported families). At
    construction a short check against the model's own forward picks the path (``self.path``): ``"tree"`` (k
    candidates on one cached prefix with a tree mask) when it reproduces the model exactly, else ``"general"`` (the
    cache repeated k times for one ordinary step). ``path="general"`` forces the general path; ``path="tree"``
    refuses a model the check fails on.

    Everything one call needs (KV caches, reward sessions, stop state) lives in that call, so one decoder, and the one
    copy of the weights the registry holds, can serve concurrent ``generate`` calls from several threads.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        rewards: Mapping[str, RewardOrPath] | None = None,
        registry: ModelRegistry | None = None,
        path: str = "auto",
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.registry = registry or shared_registry()
        self.path: DecodingPath = resolve_path(self.model, path)
        self.rewards: dict[str, RewardSource] = {}
        for name, spec in (rewards or {}).items():
            self.add_reward(name, spec)

    @classmethod
    def from_pretrained(
        cls,
        base: str | Path,
        rewards: Mapping[str, RewardOrPath] | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        registry: ModelRegistry | None = None,
        path: str = "auto",
    ) -> PandaDecoder:
        """Load (or reuse, through the process-wide registry) the base model and tokenizer, then the rewards."""
        registry = registry or shared_registry()
        loaded = registry.causal_lm(base, device=device, dtype=dtype)
        return cls(loaded.model, loaded.tokenizer, rewards=rewards, registry=registry, path=path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    def add_reward(self, name: str, spec: RewardOrPath) -> RewardSource:
        """Resolve and register a reward (head file, reward model folder, RewardHead or RewardSource) as ``name``."""
        self.rewards[name] = load_reward(name, spec, self.model, self.tokenizer, self.registry)
        return self.rewards[name]

    # ------------------------------------------------------------------------------------------------ prompts

    def encode_prompts(self, prompts: Prompts, add_special_tokens: bool | None = None) -> PromptBatch:
        """Tokenise (or take pre-tokenised ids) and left-pad.

        Text prompts get the tokenizer's special tokens (e.g. BOS) when ``add_special_tokens`` is True; with None
        (the default) they get them unless the text already starts with the BOS token, so chat-templated text never
        gets a second BOS (``panda_chat.prompt_format.encode_prompt``). Token-id prompts (lists of ints) are used
        exactly as given. Rows are left-padded (``panda_chat.padding``).
        """
        if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)):
            prompts = [cast("str | Sequence[int]", prompts)]
        if not prompts:
            raise DecodingError("no prompts given")
        texts, rows = [], []
        for index, prompt in enumerate(cast("Sequence[str | Sequence[int]]", prompts)):  # one was wrapped above
            if isinstance(prompt, str):
                ids = encode_prompt(self.tokenizer, prompt, add_special_tokens) if prompt else []
                texts.append(prompt)
            else:
                ids = [int(i) for i in prompt]
                texts.append(cast(str, self.tokenizer.decode(ids)))  # one sequence of ids decodes to one string
            if not ids:
                raise DecodingError(f"prompt {index} is empty: give at least one token of text")
            rows.append(ids)
        input_ids, attention_mask = left_pad(rows, pad_token_id(self.tokenizer))
        return PromptBatch(
            texts=texts,
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            tokenizer=self.tokenizer,
        )

    def eos_token_ids(self) -> set[int]:
        ids = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(source)
        return ids

    # ------------------------------------------------------------------------------------------------ public API

    def generate(
        self,
        prompts: Prompts,
        *,
        options: DecodingOptions | None = None,
        weights: WeightsSpec = None,
        lam: LambdaSpec = 1.0,
        add_special_tokens: bool | None = None,
        rewards: Mapping[str, RewardOrPath] | None = None,
        preference_features: torch.Tensor | None = None,
        on_token: TokenCallback | None = None,
        token_filter: TokenFilter | None = None,
        **overrides: Unpack[DecodingOverrides],
    ) -> list[GenerationOutput]:
        """Decode every prompt (one output per prompt, in order).

        ``options`` says how to decode (``DecodingOptions``); keyword arguments such as ``top_k=5`` or ``stop=[...]``
        override its fields (``DecodingOverrides``). ``weights`` / ``lam``: one for all rows or one per row (see
        ``steering``). ``rewards`` adds per-call reward sources (e.g. one user's own head) to the decoder's.
        ``preference_features`` (B, P) is handed to lambda functions. ``on_token(row, piece)`` is called with each
        row's text as it becomes final (never text that may still be part of a stop string): the batched streaming
        primitive. ``token_filter`` restricts each step's candidates to allowed tokens (see ``TokenFilter``).
        """
        options = DecodingOptions.of(options, **overrides)
        run = self._run(
            prompts,
            options,
            weights,
            lam,
            add_special_tokens,
            rewards,
            preference_features,
            track_text=on_token is not None,
            token_filter=token_filter,
        )
        while True:
            try:
                pieces = next(run)
            except StopIteration as finished:
                return finished.value
            if on_token is not None:
                for row, piece in pieces:
                    on_token(row, piece)

    def stream(
        self,
        prompt: str | Sequence[int],
        *,
        options: DecodingOptions | None = None,
        weights: Mapping[str, float] | None = None,
        lam: LambdaSpec = 1.0,
        add_special_tokens: bool | None = None,
        rewards: Mapping[str, RewardOrPath] | None = None,
        preference_features: torch.Tensor | None = None,
        **overrides: Unpack[DecodingOverrides],
    ) -> TextStream:
        """One prompt's answer piece by piece as tokens are chosen (same options as ``generate``).

        Iterate the returned ``TextStream`` for the text pieces; afterwards its ``output`` is the ``GenerationOutput``
        ``generate`` would have returned (finish reason, rewards, usage). Bad options raise here, before any decoding.
        """
        if not isinstance(prompt, str) and not (prompt and isinstance(prompt[0], int)):
            raise DecodingError("stream takes one prompt (a string or a list of token ids); use generate(on_token=...)")
        options = DecodingOptions.of(options, **overrides)
        run = self._run(
            prompt, options, weights, lam, add_special_tokens, rewards, preference_features, track_text=True
        )
        return TextStream(_pieces_of_one_row(run))

    # ------------------------------------------------------------------------------------------------ decoding

    def prepare(
        self,
        prompts: Prompts,
        options: DecodingOptions,
        weights: WeightsSpec = None,
        lam: LambdaSpec = 1.0,
        add_special_tokens: bool | None = None,
        rewards: Mapping[str, RewardOrPath] | None = None,
        preference_features: torch.Tensor | None = None,
    ) -> PreparedCall:
        """Validate one call and build what decoding it needs, raising any bad-input error before a forward pass.

        Used by ``generate``/``stream`` and by the batch scheduler's ``submit``, so both refuse the same requests
        the same way: the options against the vocabulary, the prompts (encoded, left-padded) against the context
        window, per-call ``rewards`` loaded beside the decoder's own, and the weights and lambdas as a ``SteeringPlan``.
        """
        options.validate(self.vocab_size)
        batch = self.encode_prompts(prompts, add_special_tokens)
        check_context(self.model, batch.attention_mask, options.max_new_tokens)
        sources = dict(self.rewards)
        for name, spec in (rewards or {}).items():
            sources[name] = load_reward(name, spec, self.model, self.tokenizer, self.registry)
        plan = SteeringPlan.build(sources, weights, lam, batch.input_ids.shape[0]).to(self.device)
        if preference_features is not None and preference_features.shape[0] != batch.input_ids.shape[0]:
            raise DecodingError("preference_features must have one row per prompt")
        return PreparedCall(batch=batch, plan=plan, options=options, preference_features=preference_features)

    def _run(
        self,
        prompts: Prompts,
        options: DecodingOptions,
        weights: WeightsSpec,
        lam: LambdaSpec,
        add_special_tokens: bool | None,
        rewards: Mapping[str, RewardOrPath] | None,
        preference_features: torch.Tensor | None,
        track_text: bool,
        token_filter: TokenFilter | None = None,
    ) -> Generator[list[tuple[int, str]], None, list[GenerationOutput]]:
        """Prepare one call; the returned generator yields (row, piece) lists and returns the outputs."""
        call = self.prepare(prompts, options, weights, lam, add_special_tokens, rewards, preference_features)
        return self._decode(call.batch, call.plan, call.options, call.preference_features, track_text, token_filter)

    @torch.inference_mode()
    def _decode(
        self,
        batch: PromptBatch,
        plan: SteeringPlan,
        options: DecodingOptions,
        preference_features: torch.Tensor | None,
        track_text: bool,
        token_filter: TokenFilter | None = None,
    ) -> Generator[list[tuple[int, str]], None, list[GenerationOutput]]:
        started = time.perf_counter()
        device, batch_size = self.device, batch.input_ids.shape[0]
        generator = torch.Generator(device=device).manual_seed(options.seed) if options.seed is not None else None
        policy = BaseModelSession(self.model, self.path)
        logits, prompt_features = policy.prefill(batch.input_ids, batch.attention_mask)
        context = LambdaContext(
            prompts=batch.texts,
            prompt_lengths=batch.attention_mask.sum(-1).cpu(),
            prompt_features=prompt_features,
            preference_features=preference_features,
        )
        sessions = [source.start(batch) for source in plan.sources]
        can_drop_rows = all(supports_row_selection(session) for session in sessions)
        tree = any(source.needs_base_hidden for source in plan.sources)  # a forward of the k candidates, then keep
        eos = self.eos_token_ids() if options.stop_at_eos else set()
        stops = StopTracker(self.tokenizer, batch_size, eos, options.stop, track_text=track_text)
        record = _Record(batch_size, [source.name for source in plan.sources])
        rows = list(range(batch_size))  # the original index of each row still in the batch

        all_active = torch.ones(batch_size, dtype=torch.bool, device=device)

        for step in range(options.max_new_tokens):
            logits = logits.float()
            if token_filter is not None:  # constrained decoding: disallowed tokens never become candidates
                allowed = token_filter(rows, [stops.rows[row].token_ids for row in rows])
                if allowed is not None and allowed.dtype == torch.bool:
                    logits = logits.masked_fill(~allowed.to(device), float("-inf"))
                elif allowed is not None:
                    logits = logits + allowed.to(device)
            top_logits, candidate_ids = logits.topk(options.top_k, dim=-1)  # 1. Z = top-k of pi_b: (B, k)
            candidate_logp = top_logits - logits.logsumexp(dim=-1, keepdim=True)  # their log-probs
            lam = plan.lambdas(context, step)[rows].to(device)  # lambda(x, t): (B,)
            if plan.steers:
                candidates = policy.candidate_batch(
                    candidate_ids,
                    plan.sources,
                    step=step,
                    generated_ids=[stops.rows[row].token_ids for row in rows],
                    active=all_active[: len(rows)] if can_drop_rows else stops.active_mask(rows, device),
                )
                raw = torch.stack([session.score(candidates) for session in sessions], dim=-1)  # 2. r_j: (B, k, R)
                reward = plan.combine(raw)  # sum_j w_j * clip((r_j - mean_j) / std_j): (B, k)
                scores = candidate_logp + lam[:, None] * reward  # 3. s(z) = log p(z) + lambda * r(z)
            else:  # no reward to steer with: plain top-k decoding of the base model
                raw = reward = candidate_logp[..., :0]
                scores = candidate_logp
            chosen = choose(scores, options, generator)
            for session in sessions:
                session.commit(chosen)
            tokens = candidate_ids.gather(-1, chosen[:, None]).squeeze(-1)

            record.add(rows, tokens, reward, lam, raw, chosen, stops)
            pieces = stops.update(record.last_tokens, rows)
            if step == options.max_new_tokens - 1:
                pieces += stops.finish_by_length()
            yield pieces
            still_running = [i for i, row in enumerate(rows) if stops.rows[row].finish_reason is None]
            if not still_running:
                break
            if len(still_running) < len(rows) and can_drop_rows:  # finished rows stop costing work
                keep = torch.tensor(still_running, device=device)
                parts: tuple[BaseModelSession | SteeringPlan | RewardSession, ...] = (policy, plan, *sessions)
                for part in parts:
                    part.select_rows(keep)
                rows = [rows[i] for i in still_running]
                chosen, tokens = chosen[keep], tokens[keep]
            logits = policy.keep(chosen) if tree else policy.advance(tokens)  # 4. next step's logits

        elapsed = time.perf_counter() - started
        return [
            GenerationOutput(
                text=stops.final_text(row),
                token_ids=stops.rows[row].token_ids,
                rewards=record.rewards[row],
                lambdas=record.lambdas[row],
                raw_rewards=record.raw[row],
                finish_reason=stops.rows[row].final_reason,
                prompt_tokens=int(batch.attention_mask[row].sum()),
                elapsed_s=elapsed,
            )
            for row in range(batch_size)
        ]


def _pieces_of_one_row(
    run: Generator[list[tuple[int, str]], None, list[GenerationOutput]],
) -> Generator[str, None, GenerationOutput]:
    """A one-prompt ``_run``'s (row, piece) lists as plain pieces, returning that row's output."""
    while True:
        try:
            pieces = next(run)
        except StopIteration as finished:
            return finished.value[0]
        for _, piece in pieces:
            yield piece


class _Record:
    """Per-row history of the chosen tokens' rewards and lambdas (one host sync per step for all of it)."""

    def __init__(self, batch_size: int, names: list[str]):
        self.names = names
        self.rewards: list[list[float]] = [[] for _ in range(batch_size)]
        self.lambdas: list[list[float]] = [[] for _ in range(batch_size)]
        self.raw: list[dict[str, list[float]]] = [{name: [] for name in names} for _ in range(batch_size)]
        self.last_tokens: list[int] = []

    def add(
        self,
        rows: list[int],
        tokens: torch.Tensor,
        reward: torch.Tensor,
        lam: torch.Tensor,
        raw: torch.Tensor,
        chosen: torch.Tensor,
        stops: StopTracker,
    ) -> None:
        """Append this step's values for the batch ``rows`` that had not finished before it."""
        index = chosen[:, None]
        columns = [tokens.float()[:, None], lam[:, None].float()]
        if self.names:
            columns.append(reward.gather(-1, index))
            columns.append(raw.gather(1, index[..., None].expand(-1, 1, raw.shape[-1])).squeeze(1))
        values = torch.cat(columns, dim=-1).tolist()
        self.last_tokens = [int(row_values[0]) for row_values in values]
        for row, row_values in zip(rows, values):
            if stops.rows[row].finish_reason is not None:
                continue
            self.lambdas[row].append(row_values[1])
            self.rewards[row].append(row_values[2] if self.names else 0.0)
            for j, name in enumerate(self.names):
                self.raw[row][name].append(row_values[3 + j])
