"""The asyncio API: the same names as ``nbqueue``, awaitable.

``from nbqueue.aio import Queue, Worker, queue_manager, queue_workflow, ...``
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from . import worker as _worker
from .batch import AsyncJobBatch
from .connection import Connection, connect
from .errors import *  # noqa: F403  (the same exceptions as nbqueue)
from .job import JobBase
from .manager import QueueManager as _SyncManager
from .protocol import Op, async_method, run_async
from .queue import QueueBase
from .records import Event
from .types import JobPriority, JobState, JobStatus, QueueMetrics, WorkerInfo

JobBatch = AsyncJobBatch

__all__ = ["Job", "JobBatch", "JobPriority", "JobState", "JobStatus", "Queue", "QueueManager",
           "QueueMetrics", "Worker", "WorkerInfo", "connect", "queue_manager"]


class Job(JobBase):
    """A job handle whose methods are awaitable."""

    refresh = async_method(JobBase._refresh)
    status = async_method(JobBase._status)
    get_state = async_method(JobBase._get_state)
    result = async_method(JobBase._result)
    remove = async_method(JobBase._remove)
    retry = async_method(JobBase._retry)
    promote = async_method(JobBase._promote)
    change_priority = async_method(JobBase._change_priority)
    update_data = async_method(JobBase._update_data)
    cancel = async_method(JobBase._cancel)
    get_logs = async_method(JobBase._get_logs)
    _update_progress_now = async_method(JobBase._update_progress)
    _log_now = async_method(JobBase._log)

    async def _run(self, op: Op[Any]) -> Any:
        return await self.queue._run(op)

    def update_progress(self, value: Any) -> Any:
        """Report progress; returns an awaitable (inside a worker, awaiting is optional)."""
        if self._sink is not None:
            return self._in_worker_progress(value)
        return self._update_progress_now(value)

    def log(self, message: Any) -> Any:
        """Append a line to the job's log; returns an awaitable (inside a worker the line
        is batched and awaiting is optional)."""
        if self._sink is not None:
            return self._in_worker_log(message)
        return self._log_now(message)


class Queue(QueueBase):
    """A queue with awaitable methods (one client per event loop)."""

    job_class = Job
    batch_class = AsyncJobBatch
    _aclient: Any = None
    _aloop: asyncio.AbstractEventLoop | None = None

    async def _run(self, op: Op[Any]) -> Any:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:
            self._aclient = self.connection.new_async()
            self._aloop = loop
        return await run_async(self._aclient, self._with_config(op))

    async def close(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None

    add = async_method(QueueBase._add)
    add_bulk = async_method(QueueBase._add_bulk)
    map = async_method(QueueBase._map)
    get_job = async_method(QueueBase._get_job)
    get_job_status = async_method(QueueBase._get_job_status)
    get_jobs = async_method(QueueBase._get_jobs)
    get_metrics = async_method(QueueBase._get_metrics)
    get_stats = async_method(QueueBase._get_stats)
    get_history = async_method(QueueBase._get_history)
    pause = async_method(QueueBase._pause)
    resume = async_method(QueueBase._resume)
    is_paused = async_method(QueueBase._is_paused)
    drain = async_method(QueueBase._drain)
    clean = async_method(QueueBase._clean)
    retry_failed = async_method(QueueBase._retry_failed)
    remove = async_method(QueueBase._remove)
    obliterate = async_method(QueueBase._obliterate)
    cancel = async_method(QueueBase._cancel)
    get_job_logs = async_method(QueueBase._get_job_logs)
    read_events = async_method(QueueBase._read_events)
    promote = async_method(QueueBase._promote)
    change_priority = async_method(QueueBase._change_priority)
    update_data = async_method(QueueBase._update_data)
    get_deduplication_job_id = async_method(QueueBase._get_deduplication_job_id)
    set_global_concurrency = async_method(QueueBase._set_global_concurrency)
    get_global_concurrency = async_method(QueueBase._get_global_concurrency)
    get_workers = async_method(QueueBase._get_workers)

    async def events(self, last_id: str = "$", block: Any = 1000) -> AsyncIterator[Event]:
        """Iterate over events as they come."""
        while True:
            last_id, batch = await self.read_events(last_id, block)
            for event in batch:
                yield event

    async def jobs_frame(self, states: Any = None, limit: int = 100) -> Any:
        from .frames import jobs_frame

        return jobs_frame(await self.get_jobs(states, 0, limit))

    async def metrics_history_frame(self, minutes: int = 60) -> Any:
        from .frames import history_frame

        return history_frame(self.name, await self.get_history(minutes))


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
