"""``ChatPanda``: a LangChain chat model whose every answer is steered, token by token, toward one user's preferences.

One call, in order:

1. the messages are rendered to a prompt by the model's chat template (``messages``);
2. with ``record=True`` the new human turns are stored in the user's conversation (``recording``), so the profile
   the next step reads already knows what the user just said;
3. the profile store infers the user's ``PreferenceContext`` for this prompt, and ``panda_chat.personalize`` turns it
   into reward sources, per-row weights and a lambda;
4. the PANDA decoder generates (one padded batch for ``batch``, rows of different users with their own weights);
5. the answer goes back into the conversation, and ``response_metadata`` says which preferences steered it.

The user is ``user_id``, or per call ``config={"configurable": {"user_id": ...}}`` (and ``conversation_id``): one
ChatPanda serves every user of a server. The per-call user becomes a call argument, so it is part of the LangChain
cache key and tracing parameters: a cache never serves one user's answer to another.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

import torch
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableMap, RunnablePassthrough
from langchain_core.runnables.config import ensure_config, get_config_list
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, model_validator

from panda_chat.chat_model.context_window import fit_turns
from panda_chat.chat_model.messages import Turn, message_text, render_prompt, to_turns
from panda_chat.chat_model.profile_access import ProfileAccess, open_profile_store
from panda_chat.chat_model.runtime import ModelRuntime, model_runtime
from panda_chat.chat_model.structured import JsonWriter
from panda_chat.decoding import GenerationOutput
from panda_chat.decoding.limits import context_length
from panda_chat.personalize import DEFAULT_LAMBDA, PersonalizationPlan, Personalizer, with_model_rewards
from profiles import PreferenceCatalog, PreferenceContext, validate_user_id

# Call arguments ChatPanda understands besides LangChain's own; anything else is refused (a typo would be ignored).
_CALL_OPTIONS = {
    "user_id", "conversation_id", "model", "max_tokens", "temperature", "top_k", "seed", "response_format", "stream",
}
# Standard LangChain constructor arguments that mean nothing for a local model; accepted and ignored.
_IGNORED_STANDARD_PARAMS = {"api_key", "base_url", "timeout", "max_retries"}
_FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def default_model_path() -> str:
    """The embedded demo chat model shipped with panda-chat (``panda_chat.demo``)."""
    try:
        from panda_chat.demo import default_model_path as demo_model_path  # the demo package is optional
    except ImportError as error:
        raise ValueError(
            "no model given and the embedded demo model is not installed: pass ChatPanda(model='<folder or hub id>')"
        ) from error
    return str(demo_model_path())


@dataclass
class _CallOptions:
    """One call's generation settings: the model's fields overridden by call arguments."""

    model: str
    user_id: str
    conversation_id: str | int | None
    max_tokens: int
    temperature: float
    top_k: int
    seed: int | None
    stop: list[str]
    response_format: dict[str, Any] | None  # a JSON schema for structured output; {} is "any JSON object"


@dataclass
class _Row:
    """One conversation to answer in a decode."""

    messages: list[BaseMessage]
    user_id: str
    conversation_id: str | int | None
    prompt: str
    plan: PersonalizationPlan
    run_manager: Any = None
    dropped_turns: int = 0  # oldest history turns left out to fit the context (``context_window``)


@dataclass
class _Answer:
    """What one row's generation produced, from a plain decode or from structured output's several decodes."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    lambdas: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, output: GenerationOutput) -> _Answer:
        return cls(output.text, _FINISH_REASONS[output.finish_reason], output.prompt_tokens,
                   output.completion_tokens, output.lambdas)


class _Cancelled(Exception):
    """Raised inside a decode whose consumer went away (a stream closed early)."""


class ChatPanda(BaseChatModel):
    """A chat model personalised per user at decoding time (PANDA); see the module docstring.

    ``ChatPanda(user_id="alice", model="Qwen/Qwen2.5-1.5B-Instruct")`` decodes with the base model's top-k tokens
    re-scored by ``log p + lambda * reward``, where the rewards and their weights come from alice's profile in
    ``store`` (a URL, a path or a ``ProfileStore``; ``None`` is the default profile database). Weights load once per
    process (model, device, dtype), so constructing many ChatPanda objects is cheap.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, protected_namespaces=())

    model_name: str | None = Field(default=None, alias="model")
    """Base chat model: a local folder or a hub id (None: the embedded demo model)."""
    user_id: str = "default"
    """Whose preferences steer the answers (overridable per call with ``configurable.user_id``)."""
    store: Any = None
    """The profile store: a ``ProfileStore``, a SQLAlchemy URL or a SQLite path (None: the default database)."""
    top_k: int = Field(default=10, ge=1)
    """Candidate tokens re-scored at each step."""
    temperature: float = Field(default=0.0, ge=0.0)
    """0: greedy (the best-scoring candidate); > 0: sample from softmax(score / temperature) over the candidates."""
    max_tokens: int = Field(default=256, ge=1)
    stop: list[str] | None = None
    streaming: bool = False
    seed: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    record: bool = True
    """Store each new human turn and answer in the user's conversation, so their profile learns from it."""
    personalize: bool = True
    """False: plain decoding of the base model, no profile read (recording still follows ``record``)."""
    lam: Any = None
    """lambda: a float, a ``LambdaFunction``, or None for the default (``DEFAULT_LAMBDA``)."""
    strength: float = Field(default=1.0, ge=0.0)
    """Scales every pole's steering weight (see ``panda_chat.personalize.mapping``)."""
    chat_template: str | None = None
    """A Jinja chat template for a model whose tokenizer has none."""
    build_heads: bool = False
    """A model with no reward heads (no manifest, see ``panda-chat reward bootstrap``): True builds them on first
    use (once, with a progress bar); False says so once, names the command, and scores with the zero-shot reward."""

    @model_validator(mode="before")
    @classmethod
    def _drop_remote_params(cls, values: Any) -> Any:
        """Accept LangChain's standard remote-API arguments (api_key, timeout, ...) and drop them: a local model
        has no use for them, and ``init_chat_model``-style callers pass them to every chat model."""
        if isinstance(values, dict):
            return {key: value for key, value in values.items() if key not in _IGNORED_STANDARD_PARAMS}
        return values

    # ------------------------------------------------------------------------------------------- LangChain basics

    @property
    def _llm_type(self) -> str:
        return "panda-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """Everything that changes an answer, the user included (LangChain's cache key is built from it)."""
        return {
            "model_name": self.model_name,
            "user_id": self.user_id,
            "store": self._store_label(),
            "top_k": self.top_k,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            "seed": self.seed,
            "personalize": self.personalize,
            "lam": self.lam if isinstance(self.lam, (int, float)) or self.lam is None else repr(self.lam),
            "strength": self.strength,
            "chat_template": self.chat_template,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="panda",
            ls_model_name=str(kwargs.get("model") or self.model_name or "panda-demo"),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _store_label(self) -> str | None:
        if self.store is None or isinstance(self.store, str):
            return self.store
        return str(getattr(self.store, "url", type(self.store).__name__))

    # --------------------------------------------------------------------------------- per-call user and options

    @staticmethod
    def _with_config_options(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Move ``user_id`` / ``conversation_id`` from the run config into the call arguments (see module doc).

        The config is merged with the ambient one (``ensure_config``), so a ``llm.invoke(messages)`` inside a
        LangGraph node sees the graph's ``configurable.user_id`` although the node passed no config. A per-call
        user that is present but empty, ``None`` or not a string is an error, never a fallback to ``user_id``.
        """
        config = ensure_config(config)
        configurable = config.get("configurable") or {}
        metadata = config.get("metadata") or {}
        merged = dict(kwargs)
        if "user_id" in merged:
            validate_user_id(merged["user_id"], where="user_id")
        elif "user_id" in configurable:
            merged["user_id"] = validate_user_id(configurable["user_id"], where="configurable.user_id")
        if "conversation_id" not in merged:
            value = configurable.get("conversation_id", metadata.get("conversation_id"))
            if value is not None:
                merged["conversation_id"] = value
        return merged

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return super().invoke(input, config, stop=stop, **self._with_config_options(config, kwargs))

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **self._with_config_options(config, kwargs))

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        yield from super().stream(input, config, stop=stop, **self._with_config_options(config, kwargs))

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        async for chunk in super().astream(input, config, stop=stop, **self._with_config_options(config, kwargs)):
            yield chunk

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> _CallOptions:
        unknown = set(kwargs) - _CALL_OPTIONS
        if unknown:
            raise TypeError(f"ChatPanda got unknown call arguments: {', '.join(sorted(unknown))}")
        return _CallOptions(
            model=str(kwargs.get("model") or self.model_name or default_model_path()),
            user_id=validate_user_id(kwargs["user_id"] if "user_id" in kwargs else self.user_id,
                                     where="user_id" if "user_id" in kwargs else "ChatPanda.user_id"),
            conversation_id=kwargs.get("conversation_id"),
            max_tokens=int(kwargs.get("max_tokens") or self.max_tokens),
            temperature=float(kwargs.get("temperature", self.temperature)),
            top_k=int(kwargs.get("top_k") or self.top_k),
            seed=kwargs.get("seed", self.seed),
            stop=list(stop if stop is not None else (self.stop or [])),
            response_format=kwargs.get("response_format"),
        )

    def _runtime(self, options: _CallOptions) -> ModelRuntime:
        return model_runtime(options.model, device=self.device, dtype=self.dtype)

    def _profiles(self) -> ProfileAccess:
        return open_profile_store(self.store)

    # ----------------------------------------------------------------------------------------------- preparing

    def _prepare(self, messages: Sequence[BaseMessage], options: _CallOptions, runtime: ModelRuntime,
                 user_id: str | None = None, conversation_id: str | int | None = None) -> _Row:
        """Prompt, recording of the new human turns, and the personalisation plan of one conversation."""
        user_id = options.user_id if user_id is None else validate_user_id(user_id)
        conversation_id = conversation_id if conversation_id is not None else options.conversation_id
        turns = to_turns(messages)
        if options.response_format is not None:
            turns = _with_json_instruction(turns, options.response_format)
        prompt, dropped = fit_turns(turns, lambda kept: render_prompt(kept, runtime.tokenizer, self.chat_template),
                                    lambda text: len(runtime.prompt_ids(text)), _prompt_budget(runtime, options))
        query = _last_human_text(messages)
        if not (self.record or self.personalize):  # plain decoding, nothing stored: the store is never opened
            context = PreferenceContext.neutral(PreferenceCatalog.default(), user_id, query)
            plan = self._personalizer(runtime, PreferenceCatalog.default(), embedder=None).plan(context)
            return _Row(list(messages), user_id, conversation_id, prompt, plan, dropped_turns=dropped)
        profiles = self._profiles()
        if self.record:
            conversation_id = profiles.record_incoming(user_id, conversation_id, messages)
        context = profiles.preferences(user_id, query) if self.personalize else profiles.neutral(user_id, query)
        user_heads = profiles.user_heads(user_id, runtime.decoder.model) if self.personalize else []
        plan = self._personalizer(runtime, profiles.catalog, profiles.embedder).plan(context, user_heads)
        return _Row(list(messages), user_id, conversation_id, prompt, plan, dropped_turns=dropped)

    def _personalizer(self, runtime: ModelRuntime, catalog: PreferenceCatalog, embedder: Any) -> Personalizer:
        """The catalog with the model's own rewards (if it ships any), and the lambda: ``lam`` when set, else the
        model's fitted lambda when it reads this catalog's preference vector, else ``DEFAULT_LAMBDA``."""
        if self.personalize:
            runtime.ensure_heads(catalog, self.build_heads)
        catalog = with_model_rewards(catalog, runtime.defaults.pole_rewards)
        lam = self.lam
        if lam is None:
            fitted = runtime.defaults.lam
            fits = fitted is not None and runtime.defaults.lam_preference_dim in (0, len(catalog.vector_layout()))
            lam = fitted if fits else DEFAULT_LAMBDA
        return Personalizer(catalog, runtime.pole_rewards(embedder), lam=lam, strength=self.strength)

    def _finish(self, row: _Row, answer: _Answer, options: _CallOptions) -> tuple[dict, dict]:
        """Record the answer; return (usage_metadata, response_metadata) for the message."""
        if self.record and row.conversation_id is not None:
            self._profiles().record_answer(row.user_id, row.conversation_id, answer.text)
        usage = {
            "input_tokens": answer.prompt_tokens,
            "output_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
        metadata = {
            "model_name": options.model,
            "model_provider": "panda",
            "finish_reason": answer.finish_reason,
            "user_id": row.user_id,
            "conversation_id": row.conversation_id,
            "personalization": row.plan.summary(answer.lambdas),
        }
        if row.dropped_turns:
            metadata["context"] = {"dropped_turns": row.dropped_turns,
                                   "note": f"the {row.dropped_turns} oldest history turn(s) did not fit the model's "
                                           "context and were left out of the prompt (system messages kept)"}
        return usage, metadata

    # ------------------------------------------------------------------------------------------------ decoding

    def _decode(self, runtime: ModelRuntime, rows: list[_Row], options: _CallOptions,
                emit: Callable[[int, str], None] | None) -> list[_Answer]:
        """Answer every row in one padded decode (or, for structured output, one row by schema-guided decodes)."""
        if options.response_format is not None:
            if len(rows) != 1:
                raise ValueError("structured output answers one conversation per call")
            return [self._decode_structured(runtime, rows[0], options, emit)]
        rewards: dict = {}
        for row in rows:
            rewards.update(row.plan.rewards)
        features = [row.plan.preference_features for row in rows]
        outputs = runtime.scheduler.generate(  # shares decoding steps with every other call on this model
            [row.prompt for row in rows],
            weights=[row.plan.weights for row in rows],
            lam=[row.plan.lam for row in rows],
            rewards=rewards,
            preference_features=_features_tensor(features),
            top_k=options.top_k,
            max_new_tokens=options.max_tokens,
            greedy=options.temperature == 0,
            temperature=options.temperature or 1.0,
            seed=options.seed,
            stop=options.stop,
            on_token=emit,
        )
        return [_Answer.of(output) for output in outputs]

    def _decode_structured(self, runtime: ModelRuntime, row: _Row, options: _CallOptions,
                           emit: Callable[[int, str], None] | None) -> _Answer:
        values = _DecoderValues(runtime, row, options)
        text = JsonWriter(values, emit=(lambda piece: emit(0, piece)) if emit else (lambda piece: None)).write(
            options.response_format or None
        )
        completion_tokens = len(runtime.tokenizer.encode(text, add_special_tokens=False))
        return _Answer(text, "stop", values.prompt_tokens, completion_tokens, values.lambdas)

    def _stream_decode(self, runtime: ModelRuntime, rows: list[_Row], options: _CallOptions,
                       put: Callable[[tuple], None], cancelled: threading.Event) -> None:
        """Run ``_decode`` (in a worker thread), handing ("piece", row, text), then ("done", answers) or
        ("error", exception) to ``put``."""

        def emit(row: int, piece: str) -> None:
            if cancelled.is_set():
                raise _Cancelled()
            if piece:
                put(("piece", row, piece))

        try:
            put(("done", self._decode(runtime, rows, options, emit)))
        except BaseException as error:  # handed to the consumer thread, which re-raises it
            put(("error", error))

    # ------------------------------------------------------------------------------------ BaseChatModel methods

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        options = self._options(stop, kwargs)
        runtime = self._runtime(options)
        row = self._prepare(messages, options, runtime)
        answer = self._decode(runtime, [row], options, None)[0]
        return _chat_result(answer, *self._finish(row, answer, options))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        options = self._options(stop, kwargs)
        runtime = self._runtime(options)
        row = self._prepare(messages, options, runtime)
        items: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        worker = threading.Thread(
            target=self._stream_decode, args=(runtime, [row], options, items.put, cancelled), daemon=True
        )
        worker.start()
        try:
            while True:
                item = items.get()
                if item[0] == "piece":
                    yield ChatGenerationChunk(message=AIMessageChunk(content=item[2]))
                elif item[0] == "error":
                    raise item[1]
                else:
                    answer = item[1][0]
                    yield _last_chunk(answer, *self._finish(row, answer, options))
                    return
        finally:
            cancelled.set()

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        # the whole call (store reads and writes, decoding) runs in a worker thread: the event loop never blocks
        return await asyncio.to_thread(self._generate, messages, stop, None, **kwargs)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        options = self._options(stop, kwargs)
        runtime = await asyncio.to_thread(self._runtime, options)
        row = await asyncio.to_thread(self._prepare, messages, options, runtime)
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: tuple) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        worker = threading.Thread(
            target=self._stream_decode, args=(runtime, [row], options, put, cancelled), daemon=True
        )
        worker.start()
        try:
            while True:
                item = await items.get()
                if item[0] == "piece":
                    yield ChatGenerationChunk(message=AIMessageChunk(content=item[2]))
                elif item[0] == "error":
                    raise item[1]
                else:
                    answer = item[1][0]
                    usage, metadata = await asyncio.to_thread(self._finish, row, answer, options)
                    yield _last_chunk(answer, usage, metadata)
                    return
        finally:
            cancelled.set()

    # ------------------------------------------------------------------------------------------------ batching

    def _batch_in_one_decode(self, kwargs: dict[str, Any]) -> bool:
        """One padded decode serves the batch unless a cache must be consulted per input, or the output is
        structured (schema-guided decoding answers one conversation at a time)."""
        cache_in_use = self.cache is not False and (self.cache is not None or get_llm_cache() is not None)
        return not cache_in_use and kwargs.get("response_format") is None

    def batch(self, inputs: list[LanguageModelInput], config: RunnableConfig | list[RunnableConfig] | None = None,
              *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """Answer every input in one padded decode; inputs may belong to different users (per-input config).

        ``max_concurrency`` in the config caps the rows of one decode (the inputs are decoded in chunks of it).
        """
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        if len(inputs) == 1 or not self._batch_in_one_decode(kwargs):
            return super().batch(inputs, configs, return_exceptions=return_exceptions, **kwargs)
        chunk = configs[0].get("max_concurrency")
        if chunk and chunk < len(inputs):
            return [
                result
                for start in range(0, len(inputs), chunk)
                for result in self.batch(
                    inputs[start : start + chunk],
                    [{**c, "max_concurrency": None} for c in configs[start : start + chunk]],
                    return_exceptions=return_exceptions,
                    **kwargs,
                )
            ]
        stop = kwargs.pop("stop", None)
        options = self._options(stop, kwargs)
        runtime = self._runtime(options)
        managers = [self._start_run(input_, cfg, stop, kwargs) for input_, cfg in zip(inputs, configs, strict=True)]
        results: list[Any] = [None] * len(inputs)
        rows, positions = [], []
        for index, (cfg, (manager, messages)) in enumerate(zip(configs, managers, strict=True)):
            try:
                call = self._with_config_options(cfg, kwargs)
                rows.append(self._prepare(messages, options, runtime, call.get("user_id"), call.get("conversation_id")))
                rows[-1].run_manager = manager
                positions.append(index)
            except Exception as error:
                manager.on_llm_error(error)
                if not return_exceptions:
                    raise
                results[index] = error
        if rows:
            emit = _token_emitter(rows)
            try:
                answers: Sequence[_Answer | Exception] = self._decode(runtime, rows, options, emit)
            except Exception as error:
                for row in rows:
                    row.run_manager.on_llm_error(error)
                if not return_exceptions:
                    raise
                answers = [error] * len(rows)
            for index, row, answer in zip(positions, rows, answers, strict=False):
                if isinstance(answer, Exception):
                    results[index] = answer
                    continue
                result = _chat_result(answer, *self._finish(row, answer, options))
                row.run_manager.on_llm_end(LLMResult(generations=[result.generations]))
                results[index] = result.generations[0].message
        return results

    async def abatch(self, inputs: list[LanguageModelInput],
                     config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        """``batch`` in a worker thread: one padded decode, and the event loop stays free."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        if len(inputs) == 1 or not self._batch_in_one_decode(kwargs):
            return await super().abatch(inputs, configs, return_exceptions=return_exceptions, **kwargs)
        return await asyncio.to_thread(self.batch, inputs, configs, return_exceptions=return_exceptions, **kwargs)

    def _start_run(self, input_: LanguageModelInput, config: RunnableConfig, stop: list[str] | None,
                   kwargs: dict[str, Any]) -> tuple[CallbackManagerForLLMRun, list[BaseMessage]]:
        """Open one input's LangChain run (callbacks, tags, metadata), as ``BaseChatModel.generate`` does."""
        messages = self._convert_input(input_).to_messages()
        call = self._with_config_options(config, kwargs)
        params = {**self._get_invocation_params(stop=stop, **call), **call}
        inheritable_metadata = {**(config.get("metadata") or {}), **self._get_ls_params(stop=stop, **call)}
        callback_manager = CallbackManager.configure(
            config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"), self.tags,
            inheritable_metadata, self.metadata,
        )
        run_manager = callback_manager.on_chat_model_start(
            self._serialized, [messages], invocation_params=params, options={"stop": stop},
            name=config.get("run_name"), run_id=config.get("run_id"), batch_size=1,
        )[0]
        return run_manager, messages

    # ------------------------------------------------------------------------------------------ other features

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids from the model's own tokenizer (LangChain's default would download GPT-2's)."""
        return self._runtime(self._options(None, {})).tokenizer.encode(text, add_special_tokens=False)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens of the prompt these messages become, chat template and assistant cue included."""
        if tools:
            raise ValueError("ChatPanda does not support tools, so it cannot count tokens for them")
        runtime = self._runtime(self._options(None, {}))
        return len(runtime.prompt_ids(render_prompt(to_turns(messages), runtime.tokenizer, self.chat_template)))

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        raise ValueError(
            "ChatPanda does not support tool calling (a local model with no tool-call format): use "
            "with_structured_output(schema) to get arguments as JSON, and call the tool yourself"
        )

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["json_schema", "json_mode", "function_calling"] = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable:
        """Answers as JSON for ``schema`` (a pydantic class, a TypedDict or a JSON schema), parsed.

        The JSON is schema-guided (``structured``): the code writes the syntax and the model the values, so the
        output always parses and has the schema's shape, even from a small model. Every ``method`` is served this
        way (there is no tool-calling API to use); ``json_mode`` also accepts no schema (any JSON object).
        ``strict`` is accepted for compatibility: the output always follows the schema's structure.
        """
        if kwargs:
            raise ValueError(f"unsupported arguments: {', '.join(sorted(kwargs))}")
        if method not in ("json_schema", "json_mode", "function_calling"):
            raise ValueError(f"unknown method '{method}': use 'json_schema' or 'json_mode'")
        if schema is None and method != "json_mode":
            raise ValueError("a schema is required, except with method='json_mode'")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        response_format = convert_to_json_schema(schema) if schema is not None else {}
        llm = self.bind(
            response_format=response_format,
            ls_structured_output_format={"kwargs": {"method": method, "strict": strict}, "schema": schema},
        )
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks([no_parse], exception_key="parsing_error")

    def explain(self, user_id: str | None = None, query: str | None = None) -> str:
        """Which preferences would steer an answer to ``query`` for the user, in words (the chat CLI's ``/why``)."""
        options = self._options(None, {"user_id": user_id} if user_id is not None else {})
        runtime = self._runtime(options)
        profiles = self._profiles()
        context = profiles.preferences(options.user_id, query)
        user_heads = profiles.user_heads(options.user_id, runtime.decoder.model)
        return self._personalizer(runtime, profiles.catalog, profiles.embedder).plan(context, user_heads).explain()


class _DecoderValues:
    """Structured output's ``ValueModel``: strings decoded with the row's PANDA steering, choices by likelihood."""

    def __init__(self, runtime: ModelRuntime, row: _Row, options: _CallOptions):
        self.runtime, self.row, self.options = runtime, row, options
        self.prompt_tokens = len(runtime.prompt_ids(row.prompt))
        self.lambdas: list[float] = []

    def generate_string(self, prefix: str, on_piece: Callable[[str], None]) -> str:
        plan = self.row.plan
        with self.runtime.lock:
            output = self.runtime.decoder.generate(
                [self.row.prompt + prefix],
                weights=[plan.weights],
                lam=[plan.lam],
                rewards=plan.rewards,
                preference_features=_features_tensor([plan.preference_features]),
                top_k=self.options.top_k,
                max_new_tokens=self.options.max_tokens,
                greedy=self.options.temperature == 0,
                temperature=self.options.temperature or 1.0,
                seed=self.options.seed,
                stop=['"'],
                on_token=lambda row, piece: on_piece(piece),
            )[0]
        self.lambdas.extend(output.lambdas)
        return output.text

    def choose(self, prefix: str, options: list[str]) -> int:
        scores = self.runtime.continuation_logprobs(self.row.prompt + prefix, options)
        return max(range(len(options)), key=scores.__getitem__)


def _prompt_budget(runtime: ModelRuntime, options: _CallOptions) -> int | None:
    """Tokens the prompt may take: the model's context less the answer's ``max_tokens`` (None: no known limit)."""
    limit = context_length(runtime.decoder.model)
    return None if limit is None else limit - options.max_tokens


def _features_tensor(features: list[list[float]]) -> torch.Tensor | None:
    """(B, P) preference features for a learned lambda; None when rows have none (or differ in layout)."""
    if not features or any(len(f) != len(features[0]) for f in features) or not features[0]:
        return None
    return torch.tensor(features, dtype=torch.float32)


def _with_json_instruction(turns: list[Turn], schema: dict[str, Any]) -> list[Turn]:
    """Tell the model, in the last user turn, that its answer is JSON for this schema (the writer enforces it)."""
    described = json.dumps(schema, ensure_ascii=False) if schema else "any JSON object"
    instruction = f"Answer with JSON only, following this JSON schema: {described}"
    if turns and turns[-1].role == "user":
        return [*turns[:-1], Turn("user", f"{turns[-1].content}\n\n{instruction}")]
    return [*turns, Turn("user", instruction)]


def _last_human_text(messages: Sequence[BaseMessage]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message_text(message)
    return None


def _chat_result(answer: _Answer, usage: dict, metadata: dict) -> ChatResult:
    message = AIMessage(content=answer.text, usage_metadata=usage, response_metadata=metadata)
    return ChatResult(generations=[ChatGeneration(message=message, generation_info={
        "finish_reason": answer.finish_reason})])


def _last_chunk(answer: _Answer, usage: dict, metadata: dict) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=AIMessageChunk(
        content="", usage_metadata=usage, response_metadata=metadata, chunk_position="last"
    ))


def _token_emitter(rows: list[_Row]) -> Callable[[int, str], None] | None:
    """Per-row ``on_llm_new_token`` callbacks during a batched decode (None when no row has a handler)."""
    if not any(row.run_manager is not None and row.run_manager.handlers for row in rows):
        return None

    def emit(index: int, piece: str) -> None:
        if piece:
            rows[index].run_manager.on_llm_new_token(piece)

    return emit
