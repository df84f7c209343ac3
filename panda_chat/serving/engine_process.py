"""The decode loop in a process of its own: ``EngineClient`` is a ``RequestScheduler`` whose steps run elsewhere.

In one process, the scheduler thread shares the GIL with everything else the server does for a request (HTTP, the
profile store, building the prompt and the plan). Its steps are many small torch ops, and it must win the GIL back
after each: measured on the embedded model at 16 clients, a step that overlapped a request's preparation took
38.7 ms against 21.3 ms for one that did not. vLLM splits its engine core from its API server for the same reason.
Here the engine process runs an ordinary ``BatchScheduler`` on its own copy of the model (loaded from the same
path, device and dtype), and this process sends it requests and reads back their text pieces:

- **Requests** go as pickles through one pipe. What a request references for a long time (reward heads and their
  ``HeadStack``, a learned lambda: any ``RewardSource`` or ``torch.nn.Module``) is *mirrored*: sent whole the first
  time, by a key afterwards, and dropped on the other side when this process lets it go. The engine thus holds one
  copy of each, as the thread scheduler does, and rows that share a lambda or a head stack still share its
  computation at each step.
- **Events** (pieces, the final ``GenerationOutput``, errors) come back as one message per step or so, with the
  batch's counters, and a reader thread here hands each to its request's sink.
- **Validation** stays in the caller's thread: a request is checked and encoded once, by this process's decoder
  (``BatchScheduler.prepare``), so a bad request raises where it did before, and the engine decodes the
  ``PreparedRequest`` as it is. One that cannot be pickled (a reward holding a lock or an open file), or that the
  engine cannot unpickle (a class not importable there), is decoded by the in-process scheduler instead.
- **Faults**: if the engine process dies, every request it held gets an error and the next request starts a new
  one. If this process dies (even ``kill -9``), the engine sees its pipe close and exits.

This process keeps its own copy of the model too (tools, JSON answers and likelihood scoring run here), so the
weights are in memory twice: ``panda-chat serve --engine thread`` keeps one copy and the decode loop in a thread.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from panda_chat.lam.schedules import ExponentialDecayLambda, LinearDecayLambda
from panda_chat.rewards.base import RewardSource
from panda_chat.rewards.heads import HeadStack
from panda_chat.serving.scheduler import (
    BatchScheduler,
    DecodeRequest,
    PreparedRequest,
    RequestHandle,
    RequestScheduler,
    SchedulerStats,
    Sink,
)

log = logging.getLogger("panda_chat.serving")
START_TIMEOUT_S = 600.0  # loading the model in the engine process (a large model from disk can take minutes)
_POLL_S = 0.05  # how often the reader looks for cancelled requests when no event arrives
# Sent once and then by key (see the module docstring); anything else a request holds is sent by value each time.
_MIRRORED = (RewardSource, HeadStack, torch.nn.Module, ExponentialDecayLambda, LinearDecayLambda)


class EngineProcessError(RuntimeError):
    """The engine process failed to start, or exited while it held requests."""


class _Unreadable(EngineProcessError):
    """The engine could not unpickle a request (e.g. its reward's class is not importable there): this process
    decodes it instead."""


# ------------------------------------------------------------------------------------------------ mirrored objects


def _version(obj: object) -> int:
    """What changes when a mirrored object changes in place: a ``HeadStack`` grows as poles are first steered."""
    return len(obj) if isinstance(obj, HeadStack) else 0


class _Mirror:
    """This side's record of the objects the engine holds a copy of (see the module docstring)."""

    def __init__(self) -> None:
        self._keys: dict[int, tuple[int, int]] = {}  # id(object) -> (key, version sent)
        self._next_key = 0
        self.dropped: list[int] = []  # keys of objects let go of here, to drop there (appended by finalizers)

    def dumps(self, payload: object) -> bytes:
        """``payload`` pickled, with the definitions of the mirrored objects it reaches for the first time (or
        that changed since they were sent: the engine updates its copy in place)."""
        new: list[tuple[int, object]] = []
        sent: dict[int, tuple[int, int] | None] = {}  # what to restore if pickling fails
        defining: list[object] = [None]

        def persistent_id(obj: object) -> int | None:
            if obj is defining[0] or not isinstance(obj, _MIRRORED):
                return None
            known = self._keys.get(id(obj))
            version = _version(obj)
            if known is None:
                key = self._next_key
                try:
                    weakref.finalize(obj, self._forget, id(obj), key)
                except TypeError:  # not weak-referenceable: sent by value, every time
                    return None
                self._next_key += 1
            elif known[1] != version:
                key = known[0]
            else:
                return known[0]
            sent.setdefault(id(obj), known)
            self._keys[id(obj)] = (key, version)
            new.append((key, obj))
            return key

        def pickled(obj: object) -> bytes:
            buffer = io.BytesIO()
            pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
            pickler.persistent_id = persistent_id  # type: ignore[method-assign]
            pickler.dump(obj)
            return buffer.getvalue()

        try:
            body = pickled(payload)
            definitions: dict[int, bytes] = {}
            while len(definitions) < len(new):
                key, obj = new[len(definitions)]
                defining[0] = obj
                definitions[key] = pickled(obj)
        except BaseException:
            for object_id, known in sent.items():  # nothing was sent: the engine's copies are as they were
                if known is None:
                    self._keys.pop(object_id, None)
                else:
                    self._keys[object_id] = known
            raise
        return pickle.dumps((definitions, body), protocol=pickle.HIGHEST_PROTOCOL)

    def _forget(self, object_id: int, key: int) -> None:
        self._keys.pop(object_id, None)
        self.dropped.append(key)


class _MirrorTable:
    """The engine's side: the mirrored objects by key."""

    def __init__(self) -> None:
        self.objects: dict[int, object] = {}

    def loads(self, data: bytes) -> Any:
        definitions, body = pickle.loads(data)
        loading: set[int] = set()

        def define(key: int) -> None:
            if key in loading:
                raise EngineProcessError(f"mirrored object {key} refers to itself")
            loading.add(key)
            obj = unpickled(definitions.pop(key))
            known = self.objects.get(key)
            if known is None:
                self.objects[key] = obj
            else:  # changed on the other side: update the copy in place, so whoever holds it sees the change
                state = obj.__getstate__()
                if hasattr(known, "__setstate__"):
                    known.__setstate__(state)
                else:
                    known.__dict__.update(state)

        def persistent_load(key: int) -> object:
            if key in definitions:
                define(key)
            if key not in self.objects:
                raise EngineProcessError(f"mirrored object {key} is unknown to the engine process")
            return self.objects[key]

        def unpickled(raw: bytes) -> Any:
            unpickler = pickle.Unpickler(io.BytesIO(raw))
            unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
            return unpickler.load()

        while definitions:
            define(next(iter(definitions)))
        return unpickled(body)


# ------------------------------------------------------------------------------------------------ the engine process


@dataclass(frozen=True)
class EngineSpec:
    """What the engine process loads: the same model as this process's decoder."""

    model: str
    device: str
    dtype: str
    max_batch: int
    threads: int


def _portable_error(error: object) -> object:
    """``error`` if it survives pickling, else a RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any exception that cannot cross the pipe
        return RuntimeError(f"{type(error).__name__}: {error}")


def _engine_main(conn, spec: EngineSpec) -> None:
    """The engine process: load the model, then serve the pipe until it closes."""
    try:
        from transformers.utils import logging as transformers_logging

        from panda_chat.decoding import PandaDecoder

        transformers_logging.disable_progress_bar()
        torch.set_num_threads(spec.threads)
        decoder = PandaDecoder.from_pretrained(spec.model, device=spec.device, dtype=spec.dtype)
        scheduler = BatchScheduler(decoder, max_batch=spec.max_batch)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send_bytes(pickle.dumps(("failed", f"{type(error).__name__}: {error}")))
        return
    outbox: queue.SimpleQueue[tuple[int, str, object] | None] = queue.SimpleQueue()
    handles: dict[int, RequestHandle] = {}
    table = _MirrorTable()

    def send_events() -> None:  # one message for every event waiting: about one per decoding step
        while True:
            events = [outbox.get()]
            while not outbox.empty():
                events.append(outbox.get())
            closing = None in events
            batch = [event for event in events if event is not None]
            counters = (scheduler.running_rows, asdict(scheduler.stats))
            try:
                data = pickle.dumps(("events", batch, counters))
            except Exception:  # noqa: BLE001 - an event that cannot be pickled: its error goes instead
                portable = [(rid, kind, _portable_error(v) if kind == "error" else v) for rid, kind, v in batch]
                data = pickle.dumps(("events", portable, counters))
            try:
                conn.send_bytes(data)
            except OSError:
                os._exit(0)  # the parent is gone
            if closing:
                return

    def sink_for(rid: int) -> Sink:
        def sink(kind: str, value: object) -> None:
            if kind != "piece":
                handles.pop(rid, None)
            outbox.put((rid, kind, value))

        return sink

    sender = threading.Thread(target=send_events, name="panda-engine-events", daemon=True)
    sender.start()
    conn.send_bytes(pickle.dumps(("ready", os.getpid())))
    while True:
        try:
            kind, rids, drops, body = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone (closed or killed): nobody reads the answers
        for key in drops:
            table.objects.pop(key, None)
        if kind == "submit":
            try:
                prepared = table.loads(body)
            except Exception as error:  # noqa: BLE001 - e.g. a class this process cannot import: those requests fail
                unreadable = _Unreadable(
                    f"the engine process could not read the request: {type(error).__name__}: {error}"
                )
                for rid in rids:
                    outbox.put((rid, "error", unreadable))
                continue
            try:
                made = scheduler.submit_prepared(prepared, [sink_for(rid) for rid in rids])
            except Exception as error:  # noqa: BLE001 - e.g. the engine is closing; handed to the requests
                for rid in rids:
                    outbox.put((rid, "error", _portable_error(error)))
                continue
            for rid, handle in zip(rids, made, strict=True):
                handles[rid] = handle
        elif kind == "cancel":
            for rid in rids:
                running = handles.get(rid)
                if running is not None:
                    running.cancel()
        elif kind == "close":
            scheduler.close()
            outbox.put(None)
            sender.join(timeout=30)
            return


# ------------------------------------------------------------------------------------------------ this side


@dataclass
class _Pending:
    sink: Sink
    handle: RequestHandle
    prepared: PreparedRequest
    cancel_sent: bool = False


class EngineClient(RequestScheduler):
    """A ``RequestScheduler`` whose decode loop runs in an engine process (see the module docstring).

    ``local`` is this process's scheduler on the same model: requests are checked against its decoder, and those
    that cannot be sent to the engine are decoded by it.
    """

    def __init__(self, spec: EngineSpec, local: BatchScheduler):
        self.spec = spec
        self.local = local
        self.max_batch = spec.max_batch
        self.stats = SchedulerStats()
        self._rows = 0
        self._lock = threading.Lock()  # held while pickling and sending: definitions reach the engine before uses
        self._pending: dict[int, _Pending] = {}
        self._next_rid = 0
        self._closed = False
        self._process: Any = None
        self._conn: Any = None
        self._mirror = _Mirror()
        self.pid: int | None = None
        self.restarts = 0
        self._start()

    # ------------------------------------------------------------------------------------------------ public API

    def submit_group(
        self, requests: Sequence[DecodeRequest], sinks: Sequence[Sink], cancelled: threading.Event | None = None
    ) -> list[RequestHandle]:
        """As ``BatchScheduler.submit_group``: checked and encoded here (errors raise in this thread), decoded by the
        engine."""
        prepared = [self.local.prepare(request) for request in requests]
        handles = [RequestHandle(cancelled) for _ in requests]
        with self._lock:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            if not self._alive():
                self._restart()
            rids = list(range(self._next_rid, self._next_rid + len(requests)))
            self._next_rid += len(requests)
            for rid, sink, handle, ready in zip(rids, sinks, handles, prepared, strict=True):
                self._pending[rid] = _Pending(sink, handle, ready)  # before sending: the reader may get events at once
            try:
                self._send_locked("submit", rids, prepared)
            except (pickle.PicklingError, TypeError, AttributeError):
                for rid in rids:
                    del self._pending[rid]
                return self.local.submit_prepared(prepared, sinks, cancelled)  # cannot cross: decoded here
        return handles

    def close(self) -> None:
        """Stop the engine process; requests it still held get an error."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):  # already gone
                self._send_locked("close")
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._fail_pending(RuntimeError("the scheduler was closed"))
        self._conn.close()

    @property
    def running_rows(self) -> int:
        return self._rows

    # ------------------------------------------------------------------------------------------------ internals

    def _start(self) -> None:
        # A fresh interpreter (``python -m`` this module) rather than multiprocessing's spawn, which would re-run the
        # caller's main script; never a fork of a process that runs threads and torch.
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])  # where panda_chat is imported from here
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        process = subprocess.Popen(
            [sys.executable, "-m", "panda_chat.serving.engine_process", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
        )
        theirs.close()
        conn = Connection(ours.detach())
        conn.send_bytes(pickle.dumps(self.spec))
        if not conn.poll(START_TIMEOUT_S):
            process.kill()
            raise EngineProcessError(f"the engine process did not load {self.spec.model} in {START_TIMEOUT_S:.0f} s")
        try:
            kind, detail = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            raise EngineProcessError(
                f"the engine process exited while loading {self.spec.model} (exit code {process.wait(timeout=30)})"
            ) from None
        if kind != "ready":
            process.wait(timeout=30)
            raise EngineProcessError(f"the engine process could not load {self.spec.model}: {detail}")
        self._process, self._conn, self.pid = process, conn, detail
        self._mirror = _Mirror()  # a new engine holds no mirrored object yet
        threading.Thread(target=self._read, args=(conn, process), name="panda-engine-reader", daemon=True).start()

    def _restart(self) -> None:
        """A new engine for one that died (called with the lock held): its requests get their error first."""
        pending, self._pending = self._pending, {}
        error = EngineProcessError(f"the engine process exited (exit code {self._process.poll()})")
        for item in pending.values():
            item.sink("error", error)
        self.restarts += 1
        self._start()

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _send_locked(self, kind: str, rids: Sequence[int] = (), payload: object = None) -> None:
        """One message to the engine (call with the lock held): its kind and request ids in plain pickle, so the
        engine can answer those requests even when it cannot read the payload; the keys of mirrored objects let go
        of since the last message (finalizers may run while the lock is held, so they only collect keys)."""
        body = self._mirror.dumps(payload) if payload is not None else b""
        dropped, self._mirror.dropped = self._mirror.dropped, []
        self._conn.send_bytes(pickle.dumps((kind, list(rids), dropped, body), protocol=pickle.HIGHEST_PROTOCOL))

    def _read(self, conn, process) -> None:
        """The reader thread: hand each event to its request; send cancellations; fail all if the engine dies."""
        while True:
            try:
                if conn.poll(_POLL_S):
                    self._dispatch(conn.recv_bytes())
                self._send_cancellations(conn)
            except (EOFError, OSError):
                break
        if self._conn is conn:
            self._rows = 0
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
            self._fail_pending(
                EngineProcessError(
                    f"the engine process exited (exit code {process.poll()}); the next request starts a new one"
                )
            )

    def _dispatch(self, data: bytes) -> None:
        """Hand one message's events to their requests' sinks (never letting one bad event stop the reader)."""
        try:
            _, events, (rows, stats) = pickle.loads(data)
        except Exception as error:  # which requests it was for is unknown: rather than let one wait forever, all fail
            log.error("could not read a message from the engine process", exc_info=True)
            with self._lock:
                lost, self._pending = self._pending, {}
                with contextlib.suppress(OSError):
                    self._send_locked("cancel", list(lost))
            for item in lost.values():
                item.sink("error", EngineProcessError(f"unreadable message from the engine process: {error!r}"))
            return
        self._rows, self.stats = rows, SchedulerStats(**stats)
        for rid, kind, value in events:
            pending = self._pending.pop(rid, None) if kind != "piece" else self._pending.get(rid)
            if pending is None:
                continue
            if isinstance(value, _Unreadable):  # cannot cross: decoded here, as one that cannot be pickled
                try:
                    caller = pending.handle.caller_cancelled
                    handle = self.local.submit_prepared([pending.prepared], [pending.sink], caller)[0]
                except Exception as error:  # noqa: BLE001 - handed to the request
                    kind, value = "error", error
                else:
                    pending.handle.follow(handle)
                    continue
            try:
                pending.sink(kind, value)
            except Exception:  # a sink must not raise; if one does, the other requests go on
                log.error("a request's sink raised", exc_info=True)

    def _send_cancellations(self, conn) -> None:
        cancelled = [rid for rid, p in list(self._pending.items()) if p.handle.cancelled and not p.cancel_sent]
        if not cancelled:
            return
        for rid in cancelled:
            pending = self._pending.get(rid)
            if pending is not None:
                pending.cancel_sent = True
        with self._lock:
            if self._conn is conn:
                self._send_locked("cancel", cancelled)

    def _fail_pending(self, error: Exception) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for item in pending.values():
            item.sink("error", error)


if __name__ == "__main__":  # the engine process: ``python -m panda_chat.serving.engine_process FD``
    # Run the module under its own name, so that what it pickles (its errors) is importable where it is read.
    from panda_chat.serving import engine_process

    _connection = Connection(int(sys.argv[1]))
    engine_process._engine_main(_connection, pickle.loads(_connection.recv_bytes()))
