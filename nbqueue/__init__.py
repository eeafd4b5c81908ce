"""nbqueue: BullMQ-grade job queues for Python on Redis, with a Jupyter layer.

The blocking API lives here; ``nbqueue.aio`` has the same names, awaitable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch import IncompleteResultsWarning, JobBatch
from .connection import Connection, connect
from .dataplane import BatchReused
from .errors import (
    ArtifactError,
    BatchNotFoundError,
    CodeSignatureError,
    EvictionPolicyError,
    InvalidOptionError,
    JobActiveError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    JobTimeoutError,
    MissingDependencyError,
    MissingStoreBackendError,
    NbqueueError,
    NoServerError,
    NotReplicatedError,
    PayloadTooLargeError,
    QueueBusyError,
    RedisBusyError,
    RedisOutOfMemoryError,
    RedisUnavailableError,
    ResultTimeoutError,
    SentinelServiceError,
    SignatureError,
    StoreError,
    UnknownQueueError,
    UnrecoverableError,
)
from .job import Job
from .liveness import NoLiveWorkerWarning
from .manager import QueueManager
from .predefined import (
    QueueName,
    QueueService,
    llm_request_job,
    notification_job,
    workflow_job,
)
from .queue import Queue, QueueBase
from .records import Event
from .scheduler import JobScheduler, SchedulerInfo
from .types import JobPriority, JobState, JobStatus, QueueMetrics, WorkerInfo
from .worker import Worker

if TYPE_CHECKING:
    import pandas as pd

    from .notebook.dashboard import Dashboard

__version__ = "0.1.0"

queue_manager = QueueManager()
queue_service = QueueService(queue_manager)


# -- functions that resolve queue names through queue_manager ---------------------------------
def _queue(queue: str | Queue) -> Queue:
    if isinstance(queue, Queue):
        return queue
    if isinstance(queue, QueueBase):
        raise TypeError("an nbqueue.aio.Queue needs the awaitable nbqueue.aio functions")
    return queue_manager.get_queue(queue)


def schedule_recurring_job(queue: str | Queue, data: Mapping[str, Any], cron: str | None = None,
                           *, every: Any = None, tz: Any = None, scheduler_id: str | None = None,
                           start: Any = None, end: Any = None, limit: int | None = None,
                           **job_options: Any) -> SchedulerInfo:
    """Add ``data`` to ``queue`` on a cron pattern (``"0 9 * * *"``) or ``every=`` interval.

    ``queue`` is a name (``QueueName``) of ``nbqueue.queue_manager`` or a ``Queue``. ``tz``:
    IANA zone of the pattern (default UTC). ``start``/``end``: datetimes or epoch ms;
    ``limit``: at most this many jobs. Other keywords are job options (priority, attempts,
    backoff, timeout, remove_on_*). Upserts by ``scheduler_id`` (default
    ``<queue>:<type>:<pattern>``): running it again updates instead of adding a schedule.
    """
    return JobScheduler(_queue(queue)).upsert(
        data, cron, every=every, tz=tz, scheduler_id=scheduler_id, start=start, end=end,
        limit=limit, **job_options)


def list_schedulers(queue: str | Queue) -> list[SchedulerInfo]:
    """The job schedulers of ``queue``."""
    return JobScheduler(_queue(queue)).list()


def remove_scheduler(queue: str | Queue, scheduler_id: str) -> bool:
    """Delete a scheduler and its pending (not yet started) job; False if there was none."""
    return JobScheduler(_queue(queue)).remove(scheduler_id)


def queue_workflow(workflow_name: str, input: Mapping[str, Any] | None = None, *,
                   priority: Any = None, **opts: Any) -> str:
    """Queue a workflow run on ``QueueName.WORKFLOW``; returns the job id."""
    name, data, options = workflow_job(workflow_name, input, priority=priority, **opts)
    return str(_queue(name).add(data, **options).id)


def queue_llm_request(model: str, prompt: str, *, priority: Any = None, **opts: Any) -> str:
    """Queue an LLM call on ``QueueName.LLM_REQUESTS`` (10/s, 3 at a time); returns the id."""
    name, data, options = llm_request_job(model, prompt, priority=priority, **opts)
    return str(_queue(name).add(data, **options).id)


def queue_notification(user_id: str, message: str, *, channel: str | None = None,
                       **opts: Any) -> str:
    """Queue a notification for ``user_id`` on ``QueueName.NOTIFICATIONS``; returns the id."""
    name, data, options = notification_job(user_id, message, channel=channel, **opts)
    return str(_queue(name).add(data, **options).id)


# -- notebook layer (imported lazily: pandas and ipywidgets load only when used) --------------
from .notebook import load_ipython_extension, unload_ipython_extension  # noqa: E402


def dashboard(queues: Any = None, refresh: float | None = 1.0, **kwargs: Any) -> Dashboard:
    """A live ipywidgets panel of ``queues`` (default: this kernel's): counts, progress,
    throughput, and Pause/Resume/Retry failed/Drain/Clean buttons (docs/notebook.md)."""
    from .notebook.dashboard import Dashboard

    return Dashboard(queues, refresh=refresh, **kwargs)


def chunk_frame(job: Any) -> pd.DataFrame:
    """The DataFrame chunk a ``Queue.map`` job carries, exactly as it was in the mapped
    frame (``nbqueue.frames.chunk_frame``)."""
    from .frames import chunk_frame as _chunk_frame

    return _chunk_frame(job)


def export(df: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """Write a DataFrame to ``path`` by suffix: .csv, .parquet (pyarrow), .md, .json."""
    from .frames import export as _export

    return _export(df, path, **kwargs)

__all__ = [
    "CodeSignatureError", "Connection", "Event", "EvictionPolicyError", "InvalidOptionError",
    "Job", "JobActiveError", "JobCancelledError", "JobFailedError", "JobNotFoundError",
    "JobPriority", "JobState", "JobStateError", "JobStatus", "JobTimeoutError",
    "MissingDependencyError", "NbqueueError",
    "NoServerError", "NotReplicatedError", "PayloadTooLargeError", "Queue", "QueueBusyError",
    "QueueManager",
    "QueueMetrics", "QueueName", "RedisBusyError", "RedisOutOfMemoryError",
    "RedisUnavailableError",
    "ResultTimeoutError", "SentinelServiceError", "SignatureError", "UnknownQueueError",
    "UnrecoverableError", "Worker",
    "WorkerInfo", "connect", "dashboard", "export", "load_ipython_extension", "queue_manager",
    "unload_ipython_extension",
]

# -- recurring jobs and the seed's predefined queues (nbqueue.scheduler, nbqueue.predefined)
__all__ += ["list_schedulers", "queue_llm_request", "queue_notification", "queue_service",
            "queue_workflow", "remove_scheduler", "schedule_recurring_job"]

# -- map, gather, flows (nbqueue.batch)
__all__ += ["JobBatch", "chunk_frame"]

# -- the data plane: frames as Arrow artifacts, stores, named batches (nbqueue.dataplane)
__all__ += ["ArtifactError", "BatchNotFoundError", "BatchReused", "IncompleteResultsWarning",
            "MissingStoreBackendError", "StoreError"]

# -- a wait on a queue that no live worker consumes warns (nbqueue.liveness)
__all__ += ["NoLiveWorkerWarning"]
