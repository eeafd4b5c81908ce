"""Run modes as strategies: where a worker's job bodies run.

A ``Runner`` takes the jobs ``Execution`` starts and reports each one's outcome; every
runner runs the same :class:`~.body.JobBody`. The interface is small:

- ``open(done, started)``: bind to the engine's loop; ``done(record, outcome, duration)``
  books an attempt, ``started(record)`` starts its timeout clock (where the runner cannot
  stop a body itself: thread and process mode);
- ``start(record)``: run it (or hold it, see ``holds``);
- ``cancel(record) -> bool``: its cancel was requested; True: it had not started and never
  will (the caller books it as cancelled), False: the body is told and reports itself;
- ``abort(record, stopping)``: the job is over for the engine (timed out, handed back): stop the
  body now if the mode can (asyncio: cancel the task; process: kill the child; a thread
  cannot be stopped: it runs on, its result is void);
- ``unhold()``: the worker is stopping: give back the jobs taken but not started (they
  never start);
- ``close()``.

``holds`` is how many jobs a runner takes beyond the worker's concurrency: a
process-mode child holds its next job while it runs one (``process.ProcessRunner``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Callable
from typing import Any, Protocol

from ..job import JobBase, ProgressSink
from ..records import JobRecord, Outcome
from . import capture
from .body import JobBody
from .threads import JobThreads

Done = Callable[[JobRecord, Outcome, float], None]
Started = Callable[[JobRecord], None]
JobFactory = Callable[[JobRecord, ProgressSink], JobBase]
"""Builds the handle a processor receives for a fetched job (bound to the outbox)."""


class Runner(Protocol):
    """Where job bodies run (see the module docstring)."""

    holds: int
    is_async: bool

    def open(self, done: Done, started: Started) -> None: ...

    def start(self, record: JobRecord) -> None: ...

    def cancel(self, record: JobRecord) -> bool: ...

    def abort(self, record: JobRecord, stopping: bool = False) -> None: ...

    def unhold(self) -> list[JobRecord]: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


class _InProcess:
    """What the thread and asyncio runners share: job handles, for cancel."""

    holds = 0

    def __init__(self, body: JobBody, job_factory: JobFactory, sink: ProgressSink) -> None:
        self.body = body
        self.job_factory = job_factory
        self.sink = sink
        self.handles: dict[str, JobBase] = {}
        self.done: Done = _unbound
        self.started: Started = _unbound
        self.loop: asyncio.AbstractEventLoop | None = None

    def open(self, done: Done, started: Started) -> None:
        self.loop = asyncio.get_running_loop()
        self.done, self.started = done, started

    def unhold(self) -> list[JobRecord]:
        return []  # every job handed to a thread or a task has started

    def _request_cancel(self, record: JobRecord) -> None:
        job = self.handles.get(record.id)
        if job is not None and job._cancel_requested is not None:
            job._cancel_requested.set()  # job.cancelled, raise_if_cancelled()

    def describe(self) -> str:
        return f"handles={sorted(self.handles)}"


class ThreadRunner(_InProcess):
    """``mode="thread"``: sync processors on a pool of daemon job threads; outcomes reach
    the loop in batches (one wake-up for the jobs that finished meanwhile). A thread
    cannot be stopped: cancel is cooperative (``job.cancelled``), and a body past its
    timeout runs on while its attempt has ended (the pool grows by one to keep the
    worker's concurrency)."""

    is_async = False

    def __init__(self, body: JobBody, job_factory: JobFactory, sink: ProgressSink,
                 concurrency: int) -> None:
        super().__init__(body, job_factory, sink)
        self.concurrency = concurrency
        self._pool: JobThreads | None = None
        self._finished_q: collections.deque[tuple[JobRecord, Outcome, float]] = \
            collections.deque()
        self._drain_scheduled = False

    def open(self, done: Done, started: Started) -> None:
        super().open(done, started)
        capture.install()  # print/logging of a processor -> its job's log
        self._pool = JobThreads(self.concurrency, "nbqueue-job")
        loop = self.loop
        assert loop is not None
        self.body.run_awaitable = functools.partial(_run_on_loop, loop)

    def start(self, record: JobRecord) -> None:
        job = self.handles[record.id] = self.job_factory(record, self.sink)
        if record.opts.timeout:
            self.started(record)  # its timeout counts from now (Execution's deadline)
        assert self._pool is not None
        self._pool.submit(functools.partial(self._run, record, job))

    def _run(self, record: JobRecord, job: JobBase) -> None:
        """On a job thread: the body, then hand the outcome to the loop."""
        outcome, duration = self.body.run(record, job)
        self._finished_q.append((record, outcome, duration))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            assert self.loop is not None
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                pass  # the engine is gone: the job was handed back at shutdown

    def _drain(self) -> None:
        """On the loop: book what the job threads finished since the last call."""
        self._drain_scheduled = False
        queue, handles, done = self._finished_q, self.handles, self.done
        while queue:
            record, outcome, duration = queue.popleft()
            handles.pop(record.id, None)
            done(record, outcome, duration)

    def cancel(self, record: JobRecord) -> bool:
        self._request_cancel(record)
        return False

    def abort(self, record: JobRecord, stopping: bool = False) -> None:
        self.handles.pop(record.id, None)
        if self._pool is not None and not stopping:
            self._pool.size += 1  # the stuck thread runs on; keep our concurrency

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class AsyncRunner(_InProcess):
    """``mode="asyncio"`` (and async processors in thread mode): each body is a task on
    the engine's loop; cancel and abort cancel the task."""

    is_async = True

    def __init__(self, body: JobBody, job_factory: JobFactory, sink: ProgressSink) -> None:
        super().__init__(body, job_factory, sink)
        self.tasks: dict[str, asyncio.Task[tuple[Outcome, float]]] = {}

    def open(self, done: Done, started: Started) -> None:
        super().open(done, started)
        capture.install()  # print/logging of a processor -> its job's log

    def start(self, record: JobRecord) -> None:
        job = self.handles[record.id] = self.job_factory(record, self.sink)
        assert self.loop is not None
        self.tasks[record.id] = self.loop.create_task(
            self.body.run_async(record, job, self._finished))

    def _finished(self, record: JobRecord, outcome: Outcome, duration: float) -> None:
        """In the job's task: the attempt ended (a task the worker cancelled never gets
        here: ``abort`` forgot it)."""
        self.tasks.pop(record.id, None)
        self.handles.pop(record.id, None)
        self.done(record, outcome, duration)

    def cancel(self, record: JobRecord) -> bool:
        self._request_cancel(record)
        task = self.tasks.get(record.id)
        if task is not None:
            task.cancel()
        return False

    def abort(self, record: JobRecord, stopping: bool = False) -> None:
        self.handles.pop(record.id, None)
        task = self.tasks.pop(record.id, None)
        if task is not None:
            task.cancel()

    def close(self) -> None:
        pass


def _run_on_loop(loop: asyncio.AbstractEventLoop, awaitable: Any) -> Any:
    """On a job thread: run an awaitable a sync processor returned, on the engine's loop."""
    return asyncio.run_coroutine_threadsafe(_awaited(awaitable), loop).result()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _unbound(*args: Any) -> None:
    raise RuntimeError("runner used before open()")
