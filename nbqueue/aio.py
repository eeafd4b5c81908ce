"""The asyncio API: the same names as ``nbqueue``, awaitable.

``from nbqueue.aio import Queue, Worker, queue_manager, queue_workflow, ...``
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import worker as _worker
from .batch import AsyncJobBatch
from .connection import Connection, connect
from .errors import *  # noqa: F403  (the same exceptions as nbqueue)
from .job import AsyncJob as Job
from .manager import ManagerBase
from .predefined import (
    AsyncQueueService,
    QueueName,
    llm_request_job,
    notification_job,
    workflow_job,
)
from .processor import Processor
from .protocol import by_name
from .queue import AsyncQueue as Queue
from .queue import QueueBase
from .scheduler import AsyncJobScheduler, SchedulerInfo
from .types import JobPriority, JobState, JobStatus, QueueMetrics, WorkerInfo

if TYPE_CHECKING:
    import pandas as pd

JobBatch = AsyncJobBatch
_log = logging.getLogger("nbqueue.worker")

__all__ = ["Job", "JobBatch", "JobPriority", "JobState", "JobStatus", "Queue", "QueueManager",
           "QueueMetrics", "Worker", "WorkerInfo", "connect", "queue_manager"]


class Worker(_worker.WorkerBase):
    """A worker whose lifecycle methods are awaitable; defaults to ``mode="asyncio"``."""

    def __init__(self, queue_name: str, processor: Processor | None,
                 connection: Connection | str | None = None, *, mode: str = "asyncio",
                 **options: Any) -> None:
        super().__init__(queue_name, processor, connection, mode=mode, **options)

    async def start(self) -> Worker:
        """Start (on the running loop in asyncio mode) and return at once."""
        await asyncio.to_thread(lambda: self.connection)
        self._start()
        return self

    async def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: finish active jobs (hand back what outlives the grace period)."""
        if self._task is not None:
            assert self.engine is not None
            self.engine.request_stop(timeout)
            wait = (timeout if timeout is not None else self.engine.grace) + 10
            try:
                await asyncio.wait_for(asyncio.shield(self._task), wait)
            except asyncio.TimeoutError:
                _log.error("worker did not stop within %.0fs: %s", wait,
                           self.engine.describe())
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        else:
            await asyncio.to_thread(self._stop, timeout)

    async def run(self) -> None:
        """Run until stopped (asyncio mode: on this loop; other modes: in a thread)."""
        if self.mode != "asyncio":
            await asyncio.to_thread(self._run)
            return
        self.engine = self._new_engine(self.concurrency)
        await self.engine.run()

    async def __aenter__(self) -> Worker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class QueueManager(ManagerBase[Queue, Worker]):
    """The manager whose operations are awaitable (``await queue_manager.add_job(...)``)."""

    queue_class = Queue
    worker_class = Worker

    async def start_worker(
            self, name: str, worker_concurrency: int | None = None, mode: str = "asyncio",
            processor: Processor | None = None, *, detach: bool = False,
            **worker_options: Any) -> Any:
        """Start a worker for ``name`` and return it (idempotent); asyncio mode by default.
        ``mode="process", detach=True``: a ``DetachedWorker`` (see ``nbqueue.detached``)."""
        worker = self._build_worker(name, worker_concurrency, mode, processor, worker_options)
        if detach:
            from .detached import start

            return await asyncio.to_thread(start, worker, worker.name)
        reused = self._reuse_worker(name, worker)
        if reused is not None:
            return reused
        old = self._workers.pop(name, None)
        if old is not None:
            await old.stop()
        self._workers[name] = worker
        return await worker.start()

    async def stop_worker(self, name: str, timeout: float | None = None) -> None:
        """Stop the worker of ``name`` started here (gracefully), if any."""
        worker = self._workers.pop(name, None)
        if worker is not None:
            await worker.stop(timeout)

    async def aclose(self, timeout: float | None = 10.0) -> None:
        """Stop every worker this manager started."""
        for name in list(self._workers):
            await self.stop_worker(name, timeout)

    async def metrics_frame(self, names: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per queue (its ``QueueMetrics``), as a DataFrame."""
        from .frames import metrics_frame

        names = list(names) if names is not None else sorted(self._queues)
        return metrics_frame([await self.queue(n).get_metrics() for n in names])

    # -- the seed's operations, by queue name (awaitable) ---------------------------------
    add_job = by_name(Queue, Queue.add)
    add_jobs = by_name(Queue, Queue.add_bulk)
    map = by_name(Queue, Queue.map)
    get_batch = by_name(Queue, Queue.get_batch)
    get_queue_metrics = by_name(Queue, Queue.get_metrics)
    get_job_status = by_name(Queue, Queue.get_job_status)
    get_job = by_name(Queue, Queue.get_job)
    pause_queue = by_name(Queue, Queue.pause)
    resume_queue = by_name(Queue, Queue.resume)
    drain_queue = by_name(Queue, Queue.drain)
    clean_queue = by_name(Queue, Queue.clean)
    retry_failed_jobs = by_name(Queue, Queue.retry_failed)
    remove_job = by_name(Queue, Queue.remove)
    promote_job = by_name(Queue, Queue.promote)
    change_job_priority = by_name(Queue, Queue.change_priority)
    update_job_data = by_name(Queue, Queue.update_data)
    set_global_concurrency = by_name(Queue, Queue.set_global_concurrency)
    get_workers = by_name(Queue, Queue.get_workers)
    cancel_job = by_name(Queue, Queue.cancel)
    get_job_logs = by_name(Queue, Queue.get_job_logs)


queue_manager = QueueManager()


queue_service = AsyncQueueService(queue_manager)


# -- recurring jobs and the seed's predefined queues, awaitable ------------------------------
def _queue(queue: str | Queue) -> Queue:
    if isinstance(queue, Queue):
        return queue
    if isinstance(queue, QueueBase):
        raise TypeError("a blocking nbqueue.Queue needs the blocking nbqueue functions")
    return queue_manager.get_queue(queue)


async def schedule_recurring_job(queue: str | Queue, data: Mapping[str, Any],
                                 cron: str | None = None, *, every: Any = None, tz: Any = None,
                                 scheduler_id: str | None = None, start: Any = None,
                                 end: Any = None, limit: int | None = None,
                                 **job_options: Any) -> SchedulerInfo:
    """The awaitable ``nbqueue.schedule_recurring_job``."""
    return await AsyncJobScheduler(_queue(queue)).upsert(
        data, cron, every=every, tz=tz, scheduler_id=scheduler_id, start=start, end=end,
        limit=limit, **job_options)


async def list_schedulers(queue: str | Queue) -> list[SchedulerInfo]:
    """The awaitable ``nbqueue.list_schedulers``."""
    return await AsyncJobScheduler(_queue(queue)).list()


async def remove_scheduler(queue: str | Queue, scheduler_id: str) -> bool:
    """The awaitable ``nbqueue.remove_scheduler``."""
    return await AsyncJobScheduler(_queue(queue)).remove(scheduler_id)


async def queue_workflow(workflow_name: str, input: Mapping[str, Any] | None = None, *,
                         priority: Any = None, **opts: Any) -> str:
    """The awaitable ``nbqueue.queue_workflow``."""
    name, data, options = workflow_job(workflow_name, input, priority=priority, **opts)
    return str((await _queue(name).add(data, **options)).id)


async def queue_llm_request(model: str, prompt: str, *, priority: Any = None,
                            **opts: Any) -> str:
    """The awaitable ``nbqueue.queue_llm_request``."""
    name, data, options = llm_request_job(model, prompt, priority=priority, **opts)
    return str((await _queue(name).add(data, **options)).id)


async def queue_notification(user_id: str, message: str, *, channel: str | None = None,
                             **opts: Any) -> str:
    """The awaitable ``nbqueue.queue_notification``."""
    name, data, options = notification_job(user_id, message, channel=channel, **opts)
    return str((await _queue(name).add(data, **options)).id)


__all__ += ["QueueName", "list_schedulers", "queue_llm_request", "queue_notification",
            "queue_service", "queue_workflow", "remove_scheduler", "schedule_recurring_job"]
