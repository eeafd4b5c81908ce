"""The asyncio API: the same names as ``nbqueue``, awaitable.

``from nbqueue.aio import Queue, Worker, queue_manager, queue_workflow, ...``
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from . import worker as _worker
from .batch import AsyncJobBatch
from .connection import Connection, connect
from .errors import *  # noqa: F403  (the same exceptions as nbqueue)
from .job import AsyncJob as Job
from .manager import QueueManager as _SyncManager
from .predefined import (
    AsyncQueueService,
    QueueName,
    llm_request_job,
    notification_job,
    workflow_job,
)
from .queue import AsyncQueue as Queue
from .queue import QueueBase
from .scheduler import AsyncJobScheduler, SchedulerInfo
from .types import JobPriority, JobState, JobStatus, QueueMetrics, WorkerInfo

JobBatch = AsyncJobBatch

__all__ = ["Job", "JobBatch", "JobPriority", "JobState", "JobStatus", "Queue", "QueueManager",
           "QueueMetrics", "Worker", "WorkerInfo", "connect", "queue_manager"]


class Worker(_worker.Worker):
    """A worker whose lifecycle methods are awaitable; defaults to ``mode="asyncio"``."""

    def __init__(self, queue_name: str, processor: Any,
                 connection: Connection | str | None = None, *, mode: str = "asyncio",
                 **options: Any) -> None:
        super().__init__(queue_name, processor, connection, mode=mode, **options)

    async def start(self) -> Worker:  # type: ignore[override]
        await asyncio.to_thread(lambda: self.connection)
        _worker.Worker.start(self)
        return self

    async def stop(self, timeout: float | None = None) -> None:  # type: ignore[override]
        if self._task is not None:
            assert self.engine is not None
            self.engine.request_stop(timeout)
            wait = (timeout if timeout is not None else self.engine.grace) + 10
            try:
                await asyncio.wait_for(asyncio.shield(self._task), wait)
            except asyncio.TimeoutError:
                _worker.log.error("worker did not stop within %.0fs: %s", wait,
                                  self.engine.describe())
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        else:
            await asyncio.to_thread(_worker.Worker.stop, self, timeout)

    async def run(self) -> None:  # type: ignore[override]
        if self.mode != "asyncio":
            await asyncio.to_thread(_worker.Worker.run, self)
            return
        self.engine = self._new_engine(self.concurrency)
        await self.engine.run()

    async def __aenter__(self) -> Worker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class QueueManager(_SyncManager):
    """The manager whose operations are awaitable (``await queue_manager.add_job(...)``)."""

    queue_class = Queue
    worker_class = Worker

    async def start_worker(
            self, name: str, worker_concurrency: int | None = None, mode: str = "asyncio",
            processor: Any = None, **worker_options: Any) -> Worker:
        worker = cast(Worker, self._build_worker(name, worker_concurrency, mode, processor,
                                                 worker_options))
        reused = self._reuse_worker(name, worker)
        if reused is not None:
            return cast(Worker, reused)
        old = cast("Worker | None", self._workers.pop(name, None))
        if old is not None:
            await old.stop()
        self._workers[name] = worker
        return await worker.start()

    async def stop_worker(
            self, name: str, timeout: float | None = None) -> None:
        worker = cast("Worker | None", self._workers.pop(name, None))
        if worker is not None:
            await worker.stop(timeout)

    async def aclose(self, timeout: float | None = 10.0) -> None:
        for name in list(self._workers):
            await self.stop_worker(name, timeout)

    async def metrics_frame(self, names: Any = None) -> Any:  # type: ignore[override]
        from .frames import metrics_frame

        names = list(names) if names is not None else sorted(self._queues)
        return metrics_frame([await self.queue(n).get_metrics() for n in names])


queue_manager = QueueManager()


queue_service = AsyncQueueService(queue_manager)


# -- recurring jobs and the seed's predefined queues, awaitable ------------------------------
def _queue(queue: str | Queue) -> Queue:
    if isinstance(queue, Queue):
        return queue
    if isinstance(queue, QueueBase):
        raise TypeError("a blocking nbqueue.Queue needs the blocking nbqueue functions")
    return cast(Queue, queue_manager.get_queue(queue))


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
