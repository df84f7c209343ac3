"""The OpenAI-compatible HTTP server: ``create_app(ServerSettings(...))`` is a Starlette/FastAPI app for uvicorn.

Every answer goes through ``ChatPanda`` (prompt building, recording, personalisation) and so through the model's one
``BatchScheduler``: concurrent requests share decoding steps. What the server adds is HTTP:

- ``POST /v1/chat/completions`` (streaming as server-sent events, or not), ``GET /v1/models``, ``GET /healthz``;
- profile endpoints under ``/v1/profiles/{user}``: show, set/unset a preference, feedback, export, forget;
- API keys (``profiles.keys``): ``Authorization: Bearer <key>``; a key acts only as its users (the request's
  ``user`` field, or the user in the path): another user is 403, a wrong or missing key 401;
- limits: body size, prompt tokens and ``max_tokens`` per request, requests per minute per key (per process);
- errors as OpenAI's JSON error object. Logs carry the key name, status, token counts and timings, never a
  message, a prompt or a user id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from panda_chat.chat_model import ChatPanda, StreamEnd
from panda_chat.server.paths import KeepEscapedSlashes
from panda_chat.server.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    FeedbackRequest,
    PreferenceUpdate,
    ResponseFormat,
    error_body,
)
from profiles import ProfileStore, validate_user_id
from profiles.errors import InvalidInputError, ProfileError, UnknownUserError
from profiles.keys import ApiKeys, KeyInfo

if TYPE_CHECKING:
    import torch

log = logging.getLogger("panda_chat.server")
DEMO_MODEL_ID = "panda-chat-demo"


class WithholdErrorMessages(logging.Filter):
    """For uvicorn's "Exception in ASGI application" records: the traceback keeps its frames and the exception's
    type, not its message. Starlette re-raises a request's unexpected error to uvicorn, which logs it, and such a
    message can quote the request's data (a database error quotes its statement's parameters: user ids, texts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and str(record.msg).startswith("Exception in ASGI"):
            kind, _error, trace = record.exc_info
            frames = "".join(traceback.format_tb(trace))
            record.exc_text = (
                f"Traceback (most recent call last):\n{frames}{kind.__module__}.{kind.__qualname__}: "
                "(message withheld: it may quote user data)"
            )
        return True


_FINISH = {"stop": "stop", "length": "length", "eos": "stop"}


class ServerSettings(BaseModel):
    """What ``panda-chat serve`` is started with."""

    model: str | None = None  # a folder or hub id; None: the embedded demo model
    db: str | None = None  # the profile database (URL or SQLite path); None: the default one
    embedder: str | None = None  # the store's embedder (None: all-MiniLM-L6-v2; "hashing" for quick tests)
    device: str = "auto"
    dtype: str = "auto"
    max_batch: int = 32  # rows decoded together
    # Where the decode loop runs: "process", an engine process of its own (its steps never wait for this process's
    # GIL; the weights are loaded twice), or "thread", a thread of this process (one copy of the weights). "auto":
    # a process when the model runs on the CPU, a thread on an accelerator, whose memory should not hold two copies.
    engine: Literal["auto", "process", "thread"] = "auto"
    max_tokens: int = 1024  # the most tokens one request may ask for
    default_max_tokens: int = 256  # when a request does not say
    max_prompt_tokens: int = 4096
    max_body_bytes: int = 1_000_000
    requests_per_minute: int = 600  # per API key, per server process
    worker_threads: int = 128  # request threads (store reads and writes, waiting on the scheduler)
    # The interpreter's GIL switch interval for this process (Python's default is 5 ms). The scheduler thread gives
    # the GIL up in every torch op and must win it back from the request threads each time: at 5 ms it waits, and
    # every row of the batch with it (measured: 16 clients 1.5x -> 3.6x over one at a time, benchmarks/README.md).
    switch_interval_s: float = 0.0005

    @property
    def model_id(self) -> str:
        return self.model or DEMO_MODEL_ID


class ApiError(Exception):
    """An error the client caused (or may retry), answered as OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers

    def response(self) -> JSONResponse:
        body = error_body(self.message, self.kind, self.code, self.param)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class RateLimiter:
    """At most ``per_minute`` requests per key in any 60-second window (in this process)."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, key: str) -> float:
        """0 when a request with ``key`` may go now (it is counted), else the seconds until one may (the client's
        Retry-After: OpenAI's SDKs wait that long before they retry, instead of retrying at once and failing)."""
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= 60.0:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return 60.0 - (now - hits[0])
            hits.append(now)
            return 0.0


def to_messages(messages: list[ChatMessage]) -> list[BaseMessage]:
    """OpenAI messages as LangChain messages (ChatPanda renders them with the model's chat template)."""
    converted: list[BaseMessage] = []
    for index, message in enumerate(messages):
        content: Any = message.content if message.content is not None else ""
        if message.role in ("system", "developer"):
            converted.append(SystemMessage(content=content))
        elif message.role == "user":
            converted.append(HumanMessage(content=content))
        elif message.role == "assistant":
            calls = [
                {"name": call.function.name, "id": call.id, "args": call.function.arguments}
                for call in message.tool_calls or []
            ]
            converted.append(AIMessage(content=content, tool_calls=calls))
        else:
            if not message.tool_call_id:
                raise ApiError(400, f"messages[{index}]: a tool message needs tool_call_id", param="messages")
            converted.append(ToolMessage(content=content, tool_call_id=message.tool_call_id))
    return converted


def to_response_format(value: ResponseFormat | None) -> dict[str, Any] | None:
    """OpenAI's response_format as ChatPanda's (a JSON schema; {} for any JSON object; None for text)."""
    if value is None or value.type == "text":
        return None
    if value.type == "json_object" or value.json_schema is None:
        return {}
    return dict(value.json_schema.json_schema or {})


def client_error(error: ProfileError | ValueError) -> ApiError:
    """A request the store or the model refused (a bad schema, another user's conversation) as a 400."""
    return ApiError(400, str(error).splitlines()[0])


class _ClientLeft(Exception):
    """The client of a non-streamed answer closed its connection before the answer was ready."""


async def _unless_client_leaves(request: Request, work: Awaitable[Any], every: float = 0.25) -> Any:
    """Await ``work``, checking every ``every`` s whether the client is still there; if it left, cancel ``work``
    (ChatPanda stops the decode at its next step, freeing the batch row) and raise ``_ClientLeft``. A stream
    notices a departed client when a piece cannot be sent; a non-streamed answer has nothing to send until the end."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise _ClientLeft()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _prepend(first: str | StreamEnd, rest: AsyncIterator[str | StreamEnd]) -> AsyncIterator[str | StreamEnd]:
    yield first
    async for piece in rest:
        yield piece


def _tool_calls(calls: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """LangChain tool calls as OpenAI's."""
    return [
        {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("args", {}))},
        }
        for call in calls or []
    ]


def _usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """LangChain usage metadata as OpenAI's usage."""
    prompt, completion = (usage.get("input_tokens", 0), usage.get("output_tokens", 0)) if usage else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def engine_kind(setting: str, device: torch.device) -> str:
    """Where the decode loop runs for ``--engine setting`` on ``device``: "auto" is an engine process on the CPU
    (its steps never wait for the server's GIL) and a thread on an accelerator (one copy of the weights in its
    memory)."""
    if setting == "auto":
        return "process" if device.type == "cpu" else "thread"
    return setting


def create_app(settings: ServerSettings) -> FastAPI:
    """The server app; the model loads and the database opens when it starts (uvicorn's lifespan)."""
    state: dict[str, Any] = {}
    limiter = RateLimiter(settings.requests_per_minute)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(settings.worker_threads))
        interval = sys.getswitchinterval()
        sys.setswitchinterval(settings.switch_interval_s)
        store = await asyncio.to_thread(lambda: ProfileStore(settings.db, embedder=settings.embedder))
        keys = await asyncio.to_thread(ApiKeys, store.url)
        llm = ChatPanda(model=settings.model, store=store, device=settings.device, dtype=settings.dtype)
        runtime = await asyncio.to_thread(llm._runtime, llm._options(None, {}))
        engine = engine_kind(settings.engine, runtime.decoder.device)
        if engine == "process":
            await asyncio.to_thread(runtime.start_engine_process, settings.max_batch)
        else:
            runtime.scheduler.max_batch = settings.max_batch
        state.update(store=store, keys=keys, llm=llm, runtime=runtime, engine=engine)
        try:
            yield
        finally:
            await asyncio.to_thread(runtime.stop_engine_process)
            keys.close()
            store.close()
            sys.setswitchinterval(interval)

    app = FastAPI(title="panda-chat", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(KeepEscapedSlashes)  # a user id with "/" in it is one path segment (see ``paths``)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        """No such route or method: OpenAI's error object, as for every other error."""
        message = f"{error.detail}: {request.method} {request.url.path}"
        return JSONResponse(error_body(message, "invalid_request_error"), error.status_code, error.headers)

    @app.exception_handler(Exception)
    async def _server_error(_request: Request, error: Exception) -> JSONResponse:
        log.error("internal error: %s", type(error).__name__)
        return ApiError(500, "internal server error", "server_error").response()

    async def authorize(request: Request) -> KeyInfo:
        header = request.headers.get("authorization", "")
        secret = header[7:].strip() if header[:7].lower() == "bearer " else None
        key = await asyncio.to_thread(state["keys"].authenticate, secret)
        if key is None:
            raise ApiError(
                401,
                "invalid or missing API key: send `Authorization: Bearer <key>` with a key from "
                "`panda-chat key create`",
                "authentication_error",
                "invalid_api_key",
            )
        wait = limiter.wait_s(key.name)
        if wait:
            raise ApiError(
                429,
                f"rate limit reached: at most {limiter.per_minute} requests per minute per key; retry in {wait:.0f} s",
                "rate_limit_error",
                "rate_limit_exceeded",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        return key

    def acting_as(key: KeyInfo, user: object, where: str) -> str:
        try:
            user_id = validate_user_id(user, where=where)
        except InvalidInputError as error:
            raise ApiError(400, str(error), param=where) from None
        if not key.allows(user_id):
            raise ApiError(
                403, f"API key {key.name!r} may not act as this {where}", "permission_error", "user_not_allowed", where
            )
        return user_id

    async def read_json(request: Request, model: type[BaseModel]) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise ApiError(413, f"request body over {settings.max_body_bytes} bytes", code="body_too_large")
        body = b""
        async for part in request.stream():
            body += part
            if len(body) > settings.max_body_bytes:
                raise ApiError(413, f"request body over {settings.max_body_bytes} bytes", code="body_too_large")
        try:
            return model.model_validate_json(body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ())) or "body"
            raise ApiError(400, f"{where}: {first.get('msg', 'invalid')}", param=where) from None

    # ------------------------------------------------------------------------------------------ basic routes

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        scheduler = state["runtime"].scheduler
        return {
            "status": "ok",
            "model": settings.model_id,
            "engine": {"kind": state["engine"], "pid": getattr(scheduler, "pid", None) or os.getpid()},
            "running_rows": scheduler.running_rows,
            "steps": scheduler.stats.steps,
            "max_rows": scheduler.stats.max_rows,
            "cancelled": scheduler.stats.cancelled,
        }

    model_card = {"id": settings.model_id, "object": "model", "created": 0, "owned_by": "panda-chat"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        await authorize(request)
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model:path}")  # a hub id holds a slash, sent as is or escaped
    async def model_retrieve(request: Request, model: str) -> dict[str, Any]:
        await authorize(request)
        model = unquote(model)  # what ``KeepEscapedSlashes`` kept escaped
        if model != settings.model_id:
            raise ApiError(
                404,
                f"model {model!r} is not served here; this server serves {settings.model_id!r}",
                code="model_not_found",
            )
        return model_card

    # ------------------------------------------------------------------------------------------ completions

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        started = time.perf_counter()
        key = await authorize(request)
        body: ChatCompletionRequest = await read_json(request, ChatCompletionRequest)
        user = acting_as(key, body.user, "user")
        if body.model not in (None, settings.model_id):
            raise ApiError(
                404,
                f"model {body.model!r} is not served here; GET /v1/models lists {settings.model_id!r}",
                code="model_not_found",
                param="model",
            )
        if body.n not in (None, 1):
            raise ApiError(400, "n must be 1 (one answer per request)", param="n")
        # a request that does not say gets the default, within the server's limit (a server started with
        # --max-tokens 64 serves clients that never send max_tokens, as LangChain's ChatOpenAI by default)
        default = min(settings.default_max_tokens, settings.max_tokens)
        max_tokens = body.max_completion_tokens or body.max_tokens or default
        if max_tokens > settings.max_tokens:
            raise ApiError(
                400, f"max_tokens is {max_tokens}; this server allows at most {settings.max_tokens}", param="max_tokens"
            )
        messages = to_messages(body.messages)
        llm: ChatPanda = state["llm"]
        update = {name: value for name, value in (("strength", body.strength), ("lam", body.lam)) if value is not None}
        if update:
            llm = llm.model_copy(update=update)
        try:
            prompt_tokens = await asyncio.to_thread(llm.get_num_tokens_from_messages, messages)
        except ValueError as error:
            raise ApiError(400, str(error), param="messages") from None
        if prompt_tokens > settings.max_prompt_tokens:
            raise ApiError(
                400,
                f"the prompt is {prompt_tokens} tokens; this server allows at most {settings.max_prompt_tokens}",
                code="context_length_exceeded",
                param="messages",
            )
        runnable: Any = llm
        if body.tools:
            try:
                tools = [tool.model_dump(exclude_none=True) for tool in body.tools]
                runnable = llm.bind_tools(tools, tool_choice=body.tool_choice)
            except (ValueError, NotImplementedError, TypeError) as error:
                raise ApiError(400, f"tools: {error}", param="tools") from None
        kwargs: dict[str, Any] = {"user_id": user, "max_tokens": max_tokens}
        conversation = body.conversation_id if body.conversation_id is not None else body.thread_id
        if conversation is not None:
            kwargs["conversation_id"] = conversation
        if body.temperature is not None:
            kwargs["temperature"] = body.temperature
        for name in ("seed", "top_k"):
            if getattr(body, name) is not None:
                kwargs[name] = getattr(body, name)
        response_format = to_response_format(body.response_format)
        if response_format is not None:
            kwargs["response_format"] = response_format
        stop = [body.stop] if isinstance(body.stop, str) else body.stop
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            pieces = (
                llm.astream_text(messages, stop=stop, **kwargs)
                if runnable is llm and response_format is None
                else _langchain_pieces(runnable, messages, stop, kwargs)
            )
            try:  # refused before its first token (a schema, another user's conversation): an HTTP error, not a 200
                first = await anext(pieces)
            except StopAsyncIteration:
                first = StreamEnd({}, {})
            except (ProfileError, ValueError) as error:
                raise client_error(error) from None
            stream = _stream(_prepend(first, pieces), completion_id, created, include_usage, key, started)
            return StreamingResponse(
                stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            )
        try:
            message: AIMessage = await _unless_client_leaves(request, runnable.ainvoke(messages, stop=stop, **kwargs))
        except (ProfileError, ValueError) as error:
            raise client_error(error) from None
        except _ClientLeft:
            log.info("chat key=%s status=499 (the client went away; its decode was stopped)", key.name)
            return Response(status_code=499)
        usage = _usage(message.usage_metadata)
        metadata = message.response_metadata or {}
        calls = _tool_calls(message.tool_calls)
        reply: dict[str, Any] = {
            "role": "assistant",
            "content": message.content if isinstance(message.content, str) else json.dumps(message.content),
        }
        if calls:
            reply["tool_calls"] = calls
        finish = "tool_calls" if calls else _FINISH.get(metadata.get("finish_reason", ""), "stop")
        log.info(
            "chat key=%s status=200 prompt_tokens=%d completion_tokens=%d ms=%.0f",
            key.name,
            usage["prompt_tokens"],
            usage["completion_tokens"],
            (time.perf_counter() - started) * 1000,
        )
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": settings.model_id,
            "choices": [{"index": 0, "message": reply, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
            "conversation_id": metadata.get("conversation_id"),
            "personalization": metadata.get("personalization"),
        }

    async def _langchain_pieces(
        runnable: Any, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AsyncIterator[str | StreamEnd]:
        """``astream`` of any runnable (tools bound, a response format) as ``astream_text``'s items."""
        last = None
        async for piece in runnable.astream(messages, stop=stop, **kwargs):
            if piece.content:
                yield piece.content if isinstance(piece.content, str) else json.dumps(piece.content)
            if piece.usage_metadata or piece.response_metadata.get("finish_reason"):
                last = piece
        if last is None:
            yield StreamEnd({}, {})
        else:
            yield StreamEnd(dict(last.usage_metadata or {}), last.response_metadata or {}, list(last.tool_calls))

    async def _stream(
        pieces: AsyncIterator[str | StreamEnd],
        completion_id: str,
        created: int,
        include_usage: bool,
        key: KeyInfo,
        started: float,
    ) -> AsyncIterator[str]:
        head = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": settings.model_id}

        # with include_usage, every chunk says "usage": null but the last, which carries it (as OpenAI streams)
        usage_field: dict[str, Any] = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return f"data: {json.dumps({**head, 'choices': [choice], **extra, **usage_field})}\n\n"

        # a text piece is the one event sent many times per answer: its JSON around the text is made once
        before, after = chunk({"content": "\0"}).split('"\\u0000"')

        yield chunk({"role": "assistant", "content": ""})
        end = StreamEnd({}, {})
        try:
            async for piece in pieces:
                if isinstance(piece, StreamEnd):
                    end = piece
                elif piece:
                    yield before + json.dumps(piece) + after
        except (ProfileError, ValueError) as error:
            yield f"data: {json.dumps(error_body(str(error).splitlines()[0], 'invalid_request_error'))}\n\n"
            yield "data: [DONE]\n\n"
            return
        except Exception as error:  # noqa: BLE001 - the stream has started: the error goes in it
            log.error("stream error: %s", type(error).__name__)
            yield f"data: {json.dumps(error_body('internal server error', 'server_error'))}\n\n"
            yield "data: [DONE]\n\n"
            return
        calls = _tool_calls(end.tool_calls)
        if calls:
            yield chunk({"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]})
        finish = "tool_calls" if calls else _FINISH.get(end.metadata.get("finish_reason", ""), "stop")
        yield chunk(
            {},
            finish,
            conversation_id=end.metadata.get("conversation_id"),
            personalization=end.metadata.get("personalization"),
        )
        usage = _usage(end.usage)
        if include_usage:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
        log.info(
            "chat-stream key=%s status=200 prompt_tokens=%d completion_tokens=%d ms=%.0f",
            key.name,
            usage["prompt_tokens"],
            usage["completion_tokens"],
            (time.perf_counter() - started) * 1000,
        )

    # ------------------------------------------------------------------------------------------ profiles

    async def profile_call(request: Request, user: str, function: Any, *args: Any) -> Any:
        key = await authorize(request)
        user_id = acting_as(key, user, "user")
        try:
            return await asyncio.to_thread(function, user_id, *args)
        except UnknownUserError as error:
            raise ApiError(404, str(error), code="user_not_found") from None
        except (ProfileError, ValueError) as error:
            raise ApiError(400, str(error)) from None

    def show(user_id: str) -> dict[str, Any]:
        store: ProfileStore = state["store"]
        if not store.has_user(user_id):
            raise UnknownUserError(user_id)
        return {
            "user": user_id,
            "explicit": store.explicit_preferences(user_id),
            "preferences": store.preferences(user_id).model_dump(mode="json"),
            "vector_layout": store.catalog.vector_layout(),
        }

    @app.get("/v1/profiles/{user:segment}")
    async def profile_show(request: Request, user: str) -> dict[str, Any]:
        return await profile_call(request, user, show)

    @app.put("/v1/profiles/{user:segment}/preferences/{dimension:segment}")
    async def profile_set(request: Request, user: str, dimension: str) -> dict[str, Any]:
        body: PreferenceUpdate = await read_json(request, PreferenceUpdate)
        await profile_call(request, user, state["store"].set_preference, dimension, body.pole)
        return {"user": user, "dimension": dimension, "pole": body.pole}

    @app.delete("/v1/profiles/{user:segment}/preferences/{dimension:segment}")
    async def profile_unset(request: Request, user: str, dimension: str) -> dict[str, Any]:
        removed = await profile_call(request, user, state["store"].unset_preference, dimension)
        return {"user": user, "dimension": dimension, "removed": removed}

    @app.post("/v1/profiles/{user:segment}/feedback")
    async def profile_feedback(request: Request, user: str) -> dict[str, Any]:
        body: FeedbackRequest = await read_json(request, FeedbackRequest)

        def add(user_id: str) -> int:
            return state["store"].add_feedback(user_id, **body.model_dump())

        return {"user": user, "feedback_id": await profile_call(request, user, add)}

    @app.get("/v1/profiles/{user:segment}/export")
    async def profile_export(request: Request, user: str) -> Any:
        exported = await profile_call(request, user, state["store"].export_user)
        return JSONResponse(json.loads(exported.model_dump_json()))

    @app.delete("/v1/profiles/{user:segment}")
    async def profile_forget(request: Request, user: str) -> Any:
        report = await profile_call(request, user, state["store"].forget)
        return JSONResponse(json.loads(report.model_dump_json()))

    return app
