"""Serving many requests on one model: the scheduler that owns its forward passes and batches requests continuously.

``BatchScheduler`` is used by ``ModelRuntime`` (so ChatPanda's concurrent calls share decoding steps) and by the
HTTP server (``panda_chat.server``).
"""

from panda_chat.serving.scheduler import (
    BatchScheduler,
    DecodeRequest,
    RequestCancelled,
    RequestHandle,
    SchedulerStats,
)

__all__ = ["BatchScheduler", "DecodeRequest", "RequestCancelled", "RequestHandle", "SchedulerStats"]
