"""Serving many requests on one model: the scheduler that owns its forward passes and batches requests continuously.

``BatchScheduler`` is used by ``ModelRuntime`` (so ChatPanda's concurrent calls share decoding steps) and by the
HTTP server (``panda_chat.server``), which runs it in an engine process of its own by default
(``engine_process.EngineClient``, the same ``RequestScheduler`` interface).
"""

from panda_chat.serving.scheduler import (
    BatchScheduler,
    DecodeRequest,
    RequestCancelled,
    RequestHandle,
    RequestScheduler,
    SchedulerStats,
)

__all__ = ["BatchScheduler", "DecodeRequest", "RequestCancelled", "RequestHandle", "RequestScheduler", "SchedulerStats"]
