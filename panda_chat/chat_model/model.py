"""``ChatPanda``: a LangChain chat model whose every answer is steered, token by token, toward one user's preferences.

One call, in order:

1. the messages are rendered to a prompt by the model's chat template (``messages``);
2. with ``record=True`` the new human turns are stored in the user's conversation (``recording``), so the profile
   the next step reads already knows what the user just said;
3. the profile store infers the user's ``PreferenceContext`` for this prompt, and ``panda_chat.personalize`` turns it
   into reward sources, per-row weights and a lambda;
4. the PANDA decoder generates (one padded batch for ``batch``, rows of different users with their own weights);
5. the answer goes back into the conversation, and ``response_metadata`` says which preferences steered it.

The user is ``user_id``, or per call ``config={"configurable": {"user_id": ...}}`` (and ``conversation_id``, or
LangGraph's ``thread_id``, or ``session_id``: any string names one stored conversation): one ChatPanda serves every
user of a server. The per-call user becomes a call argument, so it is part of the LangChain cache key and tracing
parameters (with the version of their profile): a cache never serves one user's answer to another.

With tools bound (``bind_tools``) a row either answers or calls a tool (``tools``); with a response format the answer
is JSON constrained to its schema (``structured``). Both are token filters on the same PANDA decode.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal, cast

import torch
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.model_profile import ModelProfile
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
from panda_chat.chat_model.profile_view import ChatProfileView, open_profile_store
from panda_chat.chat_model.runtime import ModelRuntime, model_runtime
from panda_chat.chat_model.structured import JsonConstraint, compile_schema, json_schema_of
from panda_chat.chat_model.tools import (
    ANY,
    AUTO,
    NONE,
    ToolFormat,
    call_schema,
    calls_since_last_user,
    openai_tools,
    parse_call,
    tool_choice_of,
)
from panda_chat.decoding import DecodingOptions, GenerationOutput
from panda_chat.decoding.limits import check_prompt_lengths
from panda_chat.personalize import DEFAULT_LAMBDA, PersonalizationPlan, Personalizer, with_model_rewards
from panda_chat.positions import context_length
from panda_chat.serving import DecodeRequest, RequestCancelled
from profiles import PreferenceCatalog, PreferenceContext, validate_user_id

# Call arguments ChatPanda understands besides LangChain's own; anything else is refused (a typo would be ignored).
_CALL_OPTIONS = {
    "user_id",
    "conversation_id",
    "model",
    "max_tokens",
    "temperature",
    "top_k",
    "seed",
    "response_format",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}
# Standard LangChain constructor arguments that mean nothing for a local model; accepted and ignored.
_IGNORED_STANDARD_PARAMS = {"api_key", "base_url", "timeout", "max_retries"}
_FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def default_model_path() -> str:
    """The embedded demo chat model shipped with panda-chat (``panda_chat.demo``)."""
    try:
        from panda_chat.demo import demo_model_dir  # the demo package is optional
    except ImportError as error:
        raise ValueError(
            "no model given and the embedded demo model is not installed: pass ChatPanda(model='<folder or hub id>')"
        ) from error
    return str(demo_model_dir())


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
    tools: list[dict[str, Any]] = field(default_factory=list)  # bound tools, as OpenAI tool dicts
    tool_choice: str = AUTO  # "auto", "any", "none" or a tool's name

    @property
    def calls_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != NONE


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
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, output: GenerationOutput) -> _Answer:
        return cls(
            output.text,
            _FINISH_REASONS[output.finish_reason],
            output.prompt_tokens,
            output.completion_tokens,
            output.lambdas,
        )


class _Cancelled(Exception):
    """Raised inside a decode whose consumer went away (a stream closed early)."""


@dataclass
class StreamEnd:
    """The last item of ``ChatPanda.astream_text``: what the last chunk of ``astream`` carries."""

    usage: dict[str, int]  # LangChain's usage metadata: input_tokens, output_tokens, total_tokens
    metadata: dict[str, Any]  # the message's response_metadata (finish_reason, conversation_id, personalization)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # LangChain tool calls (never in plain text)


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
    """Scales every pole's steering weight (see ``panda_chat.personalize.steering_weights``)."""
    chat_template: str | None = None
    """A Jinja chat template for a model whose tokenizer has none."""
    build_heads: bool = False
    """A model with no reward heads (no manifest, see ``panda-chat reward bootstrap``): True builds them on first
    use (once, with a progress bar); False says so once, names the command, and scores with the zero-shot reward."""
    max_tool_rounds: int = Field(default=4, ge=0)
    """With ``tool_choice="auto"``, the most tool calls made since the user last spoke before the model must answer:
    a small local model could otherwise call tools forever in an agent loop."""
    call_bias: float = 0.0
    """With ``tool_choice="auto"``, log-odds added in favour of calling a tool (a model that under-calls can be
    nudged: a large value calls whenever tools are bound, within ``max_tool_rounds``)."""
    copy_bias: float = Field(default=2.0, ge=0.0)
    """Log-probability added to JSON values (tool arguments, structured output) that copy the user's last message
    (its quoted spans when it has any): small models then extract "Oslo" from "weather in Oslo?"."""

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

    def _resolve_model_profile(self) -> ModelProfile:
        """What agents may rely on: text in and out, tool calling with tool choice, and native structured output
        (``create_agent(response_format=...)`` then asks for a JSON answer instead of a forced extra tool)."""
        return {
            "text_inputs": True,
            "text_outputs": True,
            "image_inputs": False,
            "audio_inputs": False,
            "pdf_inputs": False,
            "video_inputs": False,
            "tool_calling": True,
            "tool_choice": True,
            "structured_output": True,
        }

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
            "max_tool_rounds": self.max_tool_rounds,
            "call_bias": self.call_bias,
            "copy_bias": self.copy_bias,
        }

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        """LangChain's cache key, with the version of the call's user profile: a cache never answers from a profile
        that has changed since (new messages, settings, feedback or heads)."""
        base = super()._get_llm_string(stop=stop, **kwargs)
        if not self.personalize:
            return base
        user_id = validate_user_id(kwargs.get("user_id", self.user_id), where="user_id")
        return f"{base}---profile:{user_id}@{self._profiles().version(user_id)}"

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
            # a LangGraph thread (checkpointer) or a RunnableWithMessageHistory session is one stored conversation
            keys = [configurable.get("thread_id"), configurable.get("session_id")]
            for value in (
                configurable.get("conversation_id"),
                metadata.get("conversation_id"),
                *(str(key) for key in keys if key is not None),
            ):
                if value is not None:
                    merged["conversation_id"] = value
                    break
        return merged

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **self._with_config_options(config, kwargs))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **self._with_config_options(config, kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        yield from super().stream(input, config, stop=stop, **self._with_config_options(config, kwargs))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        async for chunk in super().astream(input, config, stop=stop, **self._with_config_options(config, kwargs)):
            yield chunk

    def _options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> _CallOptions:
        unknown = set(kwargs) - _CALL_OPTIONS
        if unknown:
            raise TypeError(f"ChatPanda got unknown call arguments: {', '.join(sorted(unknown))}")
        tools = list(kwargs.get("tools") or [])
        return _CallOptions(
            model=str(kwargs.get("model") or self.model_name or default_model_path()),
            user_id=validate_user_id(
                kwargs.get("user_id", self.user_id),
                where="user_id" if "user_id" in kwargs else "ChatPanda.user_id",
            ),
            conversation_id=kwargs.get("conversation_id"),
            max_tokens=int(kwargs.get("max_tokens") or self.max_tokens),
            temperature=float(kwargs.get("temperature", self.temperature)),
            top_k=int(kwargs.get("top_k") or self.top_k),
            seed=kwargs.get("seed", self.seed),
            stop=list(stop if stop is not None else (self.stop or [])),
            response_format=kwargs.get("response_format"),
            tools=tools,
            tool_choice=tool_choice_of(kwargs.get("tool_choice"), tools) if tools else NONE,
        )

    def _runtime(self, options: _CallOptions) -> ModelRuntime:
        return model_runtime(options.model, device=self.device, dtype=self.dtype)

    def _profiles(self) -> ChatProfileView:
        return open_profile_store(self.store)

    # ----------------------------------------------------------------------------------------------- preparing

    def _prepare(
        self,
        messages: Sequence[BaseMessage],
        options: _CallOptions,
        runtime: ModelRuntime,
        user_id: str | None = None,
        conversation_id: str | int | None = None,
    ) -> _Row:
        """Prompt, recording of the new human turns, and the personalisation plan of one conversation."""
        user_id = options.user_id if user_id is None else validate_user_id(user_id)
        conversation_id = conversation_id if conversation_id is not None else options.conversation_id
        turns = to_turns(messages)
        if options.response_format is not None:
            turns = _with_json_instruction(turns, options.response_format)
        prompt, dropped = fit_turns(
            turns,
            lambda kept: self._render(kept, runtime, options),
            lambda text: len(runtime.prompt_ids(text)),
            _prompt_budget(runtime, options),
        )
        query = _last_human_text(messages)
        _check_decodable(runtime, prompt, options)  # a request refused later must not have been recorded
        if not (self.record or self.personalize):  # plain decoding, nothing stored: the store is never opened
            context = PreferenceContext.neutral(PreferenceCatalog.default(), user_id, query)
            plan = self._personalizer(runtime, PreferenceCatalog.default(), embedder=None).plan(context)
            return _Row(list(messages), user_id, conversation_id, prompt, plan, dropped_turns=dropped)
        profiles = self._profiles()
        with runtime.prep_slots:  # a few calls at once: the decode thread must get the GIL when it needs it
            if self.record:
                conversation_id = profiles.record_incoming(user_id, conversation_id, messages)
            context = profiles.preferences(user_id, query) if self.personalize else profiles.neutral(user_id, query)
            user_heads = profiles.user_heads(user_id, runtime.decoder.model) if self.personalize else []
            plan = self._personalizer(runtime, profiles.catalog, profiles.embedder).plan(context, user_heads)
        return _Row(list(messages), user_id, conversation_id, prompt, plan, dropped_turns=dropped)

    def _render(self, turns: list[Turn], runtime: ModelRuntime, options: _CallOptions) -> str:
        """The prompt: turns (tool calls and results included) and the bound tools, as the template can show them."""
        tool_format = ToolFormat.of(runtime.tokenizer, self.chat_template)
        tools = options.tools if options.calls_tools else None
        shown = tool_format.prompt_turns(turns, tools)
        return render_prompt(
            shown, runtime.tokenizer, self.chat_template, tools=tools if tool_format.template_tools else None
        )

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
        # with ``record`` the conversation is the stored one ``record_incoming`` returned (an integer id)
        if self.record and isinstance(row.conversation_id, int) and not answer.tool_calls:
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
            metadata["context"] = {
                "dropped_turns": row.dropped_turns,
                "note": f"the {row.dropped_turns} oldest history turn(s) did not fit the model's "
                "context and were left out of the prompt (system messages kept)",
            }
        return usage, metadata

    # ------------------------------------------------------------------------------------------------ decoding

    def _decode(
        self,
        runtime: ModelRuntime,
        rows: list[_Row],
        options: _CallOptions,
        emit: Callable[[int, str], None] | None,
        cancelled: threading.Event | None = None,
    ) -> list[_Answer]:
        """Answer every row: one padded decode, constrained to the JSON schema for structured output; with tools
        bound, each row calls a tool or answers (``_decode_tools``). ``cancelled`` stops the decode within a step."""
        if options.calls_tools:
            return [self._decode_tools(runtime, row, options, cancelled) for row in rows]
        return self._decode_answers(runtime, rows, options, emit, cancelled)

    def _decode_answers(
        self,
        runtime: ModelRuntime,
        rows: list[_Row],
        options: _CallOptions,
        emit: Callable[[int, str], None] | None,
        cancelled: threading.Event | None,
    ) -> list[_Answer]:
        """Answers: JSON for the response format when there is one, else text."""
        if options.response_format is not None:
            schema = json_schema_of(options.response_format)
            return self._decode_json(runtime, rows, options, schema, emit, cancelled)
        return self._decode_text(runtime, rows, options, emit, cancelled)

    def _generate_rows(
        self,
        runtime: ModelRuntime,
        prompts: list[str],
        rows: list[_Row],
        options: _CallOptions,
        emit: Callable[[int, str], None] | None,
        cancelled: threading.Event | None,
        constraint: JsonConstraint | None = None,
        stop: list[str] | None = None,
    ) -> list:
        """One PANDA decode of ``prompts`` with each row's steering (the one place ChatPanda calls the decoder)."""
        rewards: dict = {}
        for row in rows:
            rewards.update(row.plan.rewards)
        common: dict[str, Any] = dict(
            weights=[row.plan.weights for row in rows],
            lam=[row.plan.lam for row in rows],
            rewards=rewards,
            preference_features=_features_tensor([row.plan.preference_features for row in rows]),
            options=_decoding_options(options, stop),
        )
        if constraint is None:  # plain text: the scheduler shares decoding steps with every other call on this model

            def on_token(row: int, piece: str) -> None:
                if cancelled is not None and cancelled.is_set():
                    raise _Cancelled()  # the scheduler frees this call's rows at the next step
                if emit is not None:
                    emit(row, piece)

            try:  # ``cancelled`` is read by the scheduler thread at every step, so the rows go at the next step
                return runtime.scheduler.generate(
                    prompts, max_new_tokens=options.max_tokens, on_token=on_token, cancelled=cancelled, **common
                )
            except RequestCancelled as error:
                raise _Cancelled() from error

        def token_filter(active: list[int], generated: list[list[int]]) -> torch.Tensor | None:
            if cancelled is not None and cancelled.is_set():
                raise _Cancelled()
            return constraint(active, generated)

        with runtime.lock:  # constrained decodes run on their own (the scheduler has no per-row token filter)
            return runtime.decoder.generate(
                prompts, max_new_tokens=constraint.hard_limit, on_token=emit, token_filter=token_filter, **common
            )

    def _decode_text(
        self,
        runtime: ModelRuntime,
        rows: list[_Row],
        options: _CallOptions,
        emit: Callable[[int, str], None] | None,
        cancelled: threading.Event | None,
    ) -> list[_Answer]:
        outputs = self._generate_rows(runtime, [row.prompt for row in rows], rows, options, emit, cancelled)
        return [_Answer.of(output) for output in outputs]

    def _decode_json(
        self,
        runtime: ModelRuntime,
        rows: list[_Row],
        options: _CallOptions,
        schema: dict[str, Any],
        emit: Callable[[int, str], None] | None,
        cancelled: threading.Event | None,
        prefix: str = "",
        separators: dict[str, Any] | None = None,
    ) -> list[_Answer]:
        """JSON for ``schema`` (after ``prefix``), every token constrained to it (see ``structured``)."""
        grammar = compile_schema(schema, separators)
        constraint = JsonConstraint(
            runtime.tokenizer,
            [grammar] * len(rows),
            runtime.decoder.vocab_size,
            options.max_tokens,
            schema_size=len(json.dumps(schema)),
            sources=[_last_human_text(row.messages) for row in rows],
            copy_bias=self.copy_bias,
        )
        outputs = self._generate_rows(
            runtime, [row.prompt + prefix for row in rows], rows, options, emit, cancelled, constraint, stop=[]
        )
        answers = []
        for index, output in enumerate(outputs):
            answer = _Answer.of(output)
            answer.finish_reason = "stop" if constraint.finished(index) else "length"
            answers.append(answer)
        return answers

    def _decode_tools(
        self, runtime: ModelRuntime, row: _Row, options: _CallOptions, cancelled: threading.Event | None
    ) -> _Answer:
        """Call a tool or answer: ``auto`` lets the model's likelihood decide (and stops after ``max_tool_rounds``
        calls, or a call repeating one already made since the user spoke); ``any`` or a name always calls."""
        tool_format = ToolFormat.of(runtime.tokenizer, self.chat_template)
        made = calls_since_last_user(to_turns(row.messages))
        choice = options.tool_choice
        if choice == AUTO and (len(made) >= self.max_tool_rounds or not self._prefers_call(runtime, row, tool_format)):
            return self._decode_answers(runtime, [row], options, None, cancelled)[0]
        schema = call_schema(options.tools, None if choice in (ANY, AUTO) else choice, tool_format.arguments_key)
        answer = self._decode_json(
            runtime,
            [row],
            options,
            schema,
            None,
            cancelled,
            prefix=tool_format.opening,
            separators=tool_format.separators,
        )[0]
        call = parse_call(answer.text)
        if choice == AUTO and any(
            past["function"]["name"] == call["name"] and past["function"]["arguments"] == call["args"] for past in made
        ):  # the result of this very call is already in the conversation: answer with it
            return self._decode_answers(runtime, [row], options, None, cancelled)[0]
        answer.text, answer.tool_calls = "", [call]
        return answer

    def _prefers_call(self, runtime: ModelRuntime, row: _Row, tool_format: ToolFormat) -> bool:
        """Whether a tool call's first token (plus ``call_bias``) is the model's most likely next token."""
        logprobs = runtime.next_token_logprobs(row.prompt)
        base = runtime.prompt_ids(row.prompt)
        ids = runtime.prompt_ids(row.prompt + tool_format.opening + '{"')
        common = 0
        while common < min(len(ids), len(base)) and ids[common] == base[common]:
            common += 1
        if common >= len(ids):
            return False
        return bool(logprobs[ids[common]] + self.call_bias >= logprobs.max())

    def _stream_decode(
        self,
        runtime: ModelRuntime,
        rows: list[_Row],
        options: _CallOptions,
        put: Callable[[tuple], None],
        cancelled: threading.Event,
    ) -> None:
        """Run ``_decode`` (in a worker thread), handing ("piece", row, text), then ("done", answers) or
        ("error", exception) to ``put``."""

        def emit(row: int, piece: str) -> None:
            if cancelled.is_set():
                raise _Cancelled()
            if piece:
                put(("piece", row, piece))

        try:
            put(("done", self._decode(runtime, rows, options, emit, cancelled)))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer thread, which re-raises it
            put(("error", error))

    # ------------------------------------------------------------------------------------ BaseChatModel methods

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        *,
        _cancelled: threading.Event | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._options(stop, kwargs)
        runtime, row = self._runtime_and_row(messages, options)
        answer = self._decode(runtime, [row], options, None, _cancelled)[0]
        return _chat_result(answer, *self._finish(row, answer, options))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        options = self._options(stop, kwargs)
        if options.calls_tools:  # a tool call is known whole only once decoded: one chunk
            yield _as_chunk(self._generate(messages, stop, run_manager, **kwargs))
            return
        runtime, row = self._runtime_and_row(messages, options)
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
                    yield _last_chunk(*self._finish(row, answer, options))
                    return
        finally:
            cancelled.set()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # the whole call (store reads and writes, decoding) runs in a worker thread: the event loop never blocks.
        # Cancelling the awaiting task stops the decode at its next step, which releases the model.
        cancelled = threading.Event()
        work = asyncio.ensure_future(
            asyncio.to_thread(lambda: self._generate(messages, stop, None, _cancelled=cancelled, **kwargs))
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            cancelled.set()
            work.add_done_callback(lambda done: done.cancelled() or done.exception())  # the _Cancelled it ends with
            raise

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        options = self._options(stop, kwargs)
        if options.calls_tools:  # a tool call is known whole only once decoded: one chunk
            yield _as_chunk(await self._agenerate(messages, stop, run_manager, **kwargs))
            return
        runtime, row = await asyncio.to_thread(self._runtime_and_row, messages, options)
        if options.response_format is None:  # plain text: straight from the scheduler (JSON decodes on their own)
            async for item in self._astream_pieces(runtime, row, options):
                if isinstance(item, StreamEnd):
                    yield _last_chunk(item.usage, item.metadata)
                else:
                    yield ChatGenerationChunk(message=AIMessageChunk(content=item))
            return
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
                    yield _last_chunk(usage, metadata)
                    return
        finally:
            cancelled.set()

    async def astream_text(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[str | StreamEnd]:
        """A plain-text answer as text pieces, then one ``StreamEnd``: what ``astream`` yields, without LangChain's
        chunk objects and callbacks. For a server that writes each piece straight to the wire (``panda-chat
        serve``): on a busy CPU, the per-piece message objects cost the decode thread GIL time. The same input,
        config and call arguments as ``astream``, except tools and a response format (``ValueError``: use
        ``astream``)."""
        options = self._options(stop, self._with_config_options(config, kwargs))
        if options.calls_tools or options.response_format is not None:
            raise ValueError("astream_text streams plain text only: use astream for tools or a response format")
        messages = self._convert_input(input).to_messages()
        runtime, row = await asyncio.to_thread(self._runtime_and_row, messages, options)
        async for item in self._astream_pieces(runtime, row, options):
            yield item

    def _runtime_and_row(self, messages: Sequence[BaseMessage], options: _CallOptions) -> tuple[ModelRuntime, _Row]:
        runtime = self._runtime(options)
        return runtime, self._prepare(messages, options, runtime)

    async def _astream_pieces(
        self, runtime: ModelRuntime, row: _Row, options: _CallOptions
    ) -> AsyncIterator[str | StreamEnd]:
        """A plain-text answer streamed from the model's scheduler: its thread hands each piece straight to this
        event loop (no thread per request in between). Closing the stream frees the row at the next step."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def sink(kind: str, value: object) -> None:  # in the scheduler thread: quick, never raises
            try:
                loop.call_soon_threadsafe(items.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is closed: nobody reads this answer any more
                cancelled.set()

        features = row.plan.preference_features
        request = DecodeRequest(
            prompt=row.prompt,
            options=DecodingOptions.of(_decoding_options(options), max_new_tokens=options.max_tokens),
            weights=row.plan.weights,
            lam=row.plan.lam,
            rewards=dict(row.plan.rewards),
            preference_features=list(features) if features else None,
        )
        try:
            await asyncio.to_thread(runtime.scheduler.submit, request, sink, cancelled)
            held = None
            while True:
                item, held = held or await items.get(), None
                if item[0] == "piece":
                    text = item[1]
                    while held is None and not items.empty():  # pieces already waiting go out as one chunk: a
                        held = items.get_nowait()  # busy server sends fewer, larger chunks, never a different text
                        if held[0] == "piece":
                            text, held = text + held[1], None
                    if text:
                        yield text
                elif item[0] == "error":
                    raise item[1]
                else:
                    answer = _Answer.of(item[1])
                    yield StreamEnd(*await asyncio.to_thread(self._finish, row, answer, options))
                    return
        finally:
            cancelled.set()

    # ------------------------------------------------------------------------------------------------ batching

    def _batch_in_one_decode(self, kwargs: dict[str, Any]) -> bool:
        """One padded decode serves the batch unless a cache must be consulted per input, or tools are bound (each
        conversation decides on its own whether to call one)."""
        cache_in_use = self.cache is not False and (self.cache is not None or get_llm_cache() is not None)
        return not cache_in_use and not kwargs.get("tools")

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
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

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """``batch`` in a worker thread: one padded decode, and the event loop stays free."""
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        if len(inputs) == 1 or not self._batch_in_one_decode(kwargs):
            return await super().abatch(inputs, configs, return_exceptions=return_exceptions, **kwargs)
        return await asyncio.to_thread(self.batch, inputs, configs, return_exceptions=return_exceptions, **kwargs)

    def _start_run(
        self, input_: LanguageModelInput, config: RunnableConfig, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[CallbackManagerForLLMRun, list[BaseMessage]]:
        """Open one input's LangChain run (callbacks, tags, metadata), as ``BaseChatModel.generate`` does."""
        messages = self._convert_input(input_).to_messages()
        call = self._with_config_options(config, kwargs)
        params = {**self._get_invocation_params(stop=stop, **call), **call}
        inheritable_metadata = {**(config.get("metadata") or {}), **self._get_ls_params(stop=stop, **call)}
        callback_manager = CallbackManager.configure(
            config.get("callbacks"),
            self.callbacks,
            self.verbose,
            config.get("tags"),
            self.tags,
            inheritable_metadata,
            self.metadata,
        )
        run_manager = callback_manager.on_chat_model_start(
            self._serialized,
            [messages],
            invocation_params=params,
            options={"stop": stop},
            name=config.get("run_name"),
            run_id=config.get("run_id"),
            batch_size=1,
        )[0]
        return run_manager, messages

    # ------------------------------------------------------------------------------------------ other features

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids from the model's own tokenizer (LangChain's default would download GPT-2's)."""
        return self._runtime(self._options(None, {})).tokenizer.encode(text, add_special_tokens=False)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens of the prompt these messages become, chat template, tools and assistant cue included."""
        options = self._options(None, {"tools": openai_tools(tools)} if tools else {})
        runtime = self._runtime(options)
        return len(runtime.prompt_ids(self._render(to_turns(messages), runtime, options)))

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Runnable:
        """Offer ``tools`` to the model (see ``chat_model.tools``): it answers or calls one, its arguments always
        valid for the tool's schema. ``tool_choice``: ``"auto"`` (None; the model's likelihood decides), ``"any"`` /
        ``"required"`` / True (always call), ``"none"`` (never), or a tool's name (call that one)."""
        converted = openai_tools(tools)
        tool_choice_of(tool_choice, converted)  # a bad choice fails here, not at the first call
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=converted, **kwargs)

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
        if isinstance(schema, dict):
            schema = json_schema_of(schema)  # OpenAI's {"type": "json_schema", "json_schema": ...} envelope too
        response_format = (
            convert_to_json_schema(schema) if schema is not None and not _is_plain_schema(schema) else (schema or {})
        )
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


def _is_plain_schema(schema: Any) -> bool:
    """A JSON schema dict that needs no conversion (one without a title is not a function description)."""
    return (
        isinstance(schema, dict)
        and "title" not in schema
        and ("type" in schema or "properties" in schema or "anyOf" in schema or "oneOf" in schema)
    )


def _decoding_options(options: _CallOptions, stop: list[str] | None = None) -> DecodingOptions:
    """The decoder's options for a call (``stop`` overrides the call's stop strings)."""
    return DecodingOptions.from_temperature(
        options.temperature, top_k=options.top_k, seed=options.seed, stop=options.stop if stop is None else stop
    )


def _check_decodable(runtime: ModelRuntime, prompt: str, options: _CallOptions) -> None:
    """Raise, before anything is stored, what the decoder would raise for this call: its options against the
    vocabulary, the prompt plus ``max_tokens`` against the context, a response format's schema."""
    _decoding_options(options).validate(runtime.decoder.vocab_size)
    answer_tokens = options.max_tokens
    if options.response_format is not None and not options.calls_tools:
        schema = json_schema_of(options.response_format)
        answer_tokens = JsonConstraint(  # its matcher refuses a schema it cannot follow, as the decode's would
            runtime.tokenizer,
            [compile_schema(schema)],
            runtime.decoder.vocab_size,
            options.max_tokens,
            schema_size=len(json.dumps(schema)),
        ).hard_limit
    limit = context_length(runtime.decoder.model)
    check_prompt_lengths([len(runtime.prompt_ids(prompt))], answer_tokens, limit, budget_name="max_tokens")


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
    message = AIMessage(
        content=answer.text, tool_calls=answer.tool_calls, usage_metadata=usage, response_metadata=metadata
    )
    return ChatResult(
        generations=[ChatGeneration(message=message, generation_info={"finish_reason": answer.finish_reason})]
    )


def _as_chunk(result: ChatResult) -> ChatGenerationChunk:
    """A whole answer (text or tool calls) as one final stream chunk."""
    message = cast(AIMessage, result.generations[0].message)  # ChatPanda's generations hold AIMessages
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content=message.content,
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
            tool_call_chunks=[
                {"name": call["name"], "args": json.dumps(call["args"]), "id": call["id"], "index": index}
                for index, call in enumerate(message.tool_calls)
            ],
            chunk_position="last",
        )
    )


def _last_chunk(usage: dict, metadata: dict) -> ChatGenerationChunk:
    return ChatGenerationChunk(
        message=AIMessageChunk(content="", usage_metadata=usage, response_metadata=metadata, chunk_position="last")
    )


def _token_emitter(rows: list[_Row]) -> Callable[[int, str], None] | None:
    """Per-row ``on_llm_new_token`` callbacks during a batched decode (None when no row has a handler)."""
    if not any(row.run_manager is not None and row.run_manager.handlers for row in rows):
        return None

    def emit(index: int, piece: str) -> None:
        if piece:
            rows[index].run_manager.on_llm_new_token(piece)

    return emit
