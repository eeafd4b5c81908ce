"""The asyncio API: the same names as ``nbqueue``, awaitable.

``from nbqueue.aio import Queue, Worker, queue_manager, queue_workflow, ...``
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from . import worker as _worker
from .batch import AsyncJobBatch
from .connection import Connection, connect
from .errors import *  # noqa: F403  (the same exceptions as nbqueue)
from .job import AsyncJob as Job
from .manager import QueueManager as _SyncManager
from .queue import AsyncQueue as Queue
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


# -- recurring jobs and the seed's predefined queues, awaitable ------------------------------
from .predefined import QueueName  # noqa: E402
from .predefined import aqueue_llm_request as queue_llm_request  # noqa: E402
from .predefined import aqueue_notification as queue_notification  # noqa: E402
from .predefined import aqueue_service as queue_service  # noqa: E402
from .predefined import aqueue_workflow as queue_workflow  # noqa: E402
from .scheduler import alist_schedulers as list_schedulers  # noqa: E402
from .scheduler import aremove_scheduler as remove_scheduler  # noqa: E402
from .scheduler import aschedule_recurring_job as schedule_recurring_job  # noqa: E402

__all__ += ["QueueName", "list_schedulers", "queue_llm_request", "queue_notification",
            "queue_service", "queue_workflow", "remove_scheduler", "schedule_recurring_job"]
