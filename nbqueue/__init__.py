"""nbqueue: BullMQ-grade job queues for Python on Redis, with a Jupyter layer.

The blocking API lives here; ``nbqueue.aio`` has the same names, awaitable.
"""

from __future__ import annotations

from typing import Any

from .batch import JobBatch, chunk_frame
from .connection import Connection, connect
from .errors import (
    EvictionPolicyError,
    InvalidOptionError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    JobTimeoutError,
    NbqueueError,
    PayloadTooLargeError,
    RedisOutOfMemoryError,
    RedisUnavailableError,
    SignatureError,
    UnknownQueueError,
    UnrecoverableError,
)
from .job import Job
from .manager import QueueManager
from .predefined import (
    QueueName,
    queue_llm_request,
    queue_notification,
    queue_service,
    queue_workflow,
)
from .queue import Queue
from .records import Event
from .scheduler import list_schedulers, remove_scheduler, schedule_recurring_job
from .types import JobPriority, JobState, JobStatus, QueueMetrics, WorkerInfo
from .worker import Worker

__version__ = "0.1.0"

queue_manager = QueueManager()

# -- notebook layer (imported lazily: pandas and ipywidgets load only when used) --------------
from .notebook import load_ipython_extension, unload_ipython_extension  # noqa: E402


def dashboard(queues: Any = None, refresh: float | None = 1.0, **kwargs: Any) -> Any:
    """A live ipywidgets panel of ``queues`` (default: this kernel's): counts, progress,
    throughput, and Pause/Resume/Retry failed/Drain/Clean buttons (README: Notebooks)."""
    from .notebook.dashboard import Dashboard

    return Dashboard(queues, refresh=refresh, **kwargs)


def export(df: Any, path: Any, **kwargs: Any) -> Any:
    """Write a DataFrame to ``path`` by suffix: .csv, .parquet (pyarrow), .md, .json."""
    from .frames import export as _export

    return _export(df, path, **kwargs)

__all__ = [
    "Connection", "Event", "EvictionPolicyError", "InvalidOptionError", "Job", "JobFailedError",
    "JobNotFoundError", "JobPriority", "JobState", "JobStateError", "JobStatus", "JobTimeoutError",
    "NbqueueError", "PayloadTooLargeError", "Queue", "QueueManager", "QueueMetrics", "QueueName",
    "RedisOutOfMemoryError", "RedisUnavailableError", "SignatureError", "UnknownQueueError",
    "UnrecoverableError", "Worker", "WorkerInfo", "connect", "dashboard", "export",
    "load_ipython_extension", "queue_manager", "unload_ipython_extension",
]

# -- recurring jobs and the seed's predefined queues (nbqueue.scheduler, nbqueue.predefined)
__all__ += ["list_schedulers", "queue_llm_request", "queue_notification", "queue_service",
            "queue_workflow", "remove_scheduler", "schedule_recurring_job"]

# -- map, gather, flows (nbqueue.batch)
__all__ += ["JobBatch", "chunk_frame"]
