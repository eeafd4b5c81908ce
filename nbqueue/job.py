"""Job handles: what ``Queue.add`` returns and what a processor receives.

Their methods run operations of their queue's ``ops`` (``nbqueue.ops``); architecture:
docs/architecture.md.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Generator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import flows, otel
from .dataplane import resolve_many
from .display import job_html, job_text
from .errors import JobCancelledError, JobNotFoundError
from .options import parse_priority
from .protocol import Op, async_method, sync_method
from .records import JobRecord
from .serialization import dumps
from .types import JobState, JobStatus

if TYPE_CHECKING:
    from .queue import QueueBase


class ProgressSink(Protocol):
    """The worker engine: collects progress reports and log lines of the jobs it runs
    (thread-safe)."""

    def report_progress(self, job: JobBase, value: Any) -> None: ...

    def report_log(self, job_id: str, line: str) -> None: ...


class _Done(Awaitable[None]):
    """What ``update_progress`` returns inside a worker: awaiting it is optional."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield

    def __repr__(self) -> str:
        return "<progress reported>"


JB = TypeVar("JB", bound="JobBase")


class JobBase:
    """A job of one queue. Attributes mirror BullMQ's (``attempts_made``, ``progress``...)."""

    def __init__(self, queue: QueueBase[Any, Any], record: JobRecord,
                 sink: ProgressSink | None = None) -> None:
        self.queue = queue
        self._record = record
        self._sink = sink

    @property
    def _cancel_requested(self) -> threading.Event | None:
        """Set by the worker when this job's cancel is requested (``job.cancelled``); None
        outside a worker. Made on first use: most jobs never need one (a threading.Event
        costs several microseconds, a noticeable part of a worker's per-job cost)."""
        if self._sink is None:
            return None
        event: threading.Event | None = self.__dict__.get("_cancel_event")
        if event is None:  # setdefault is atomic: the loop and the job thread agree on one
            event = self.__dict__.setdefault("_cancel_event", threading.Event())
        return event

    # -- attributes ------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._record.id

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def data(self) -> dict[str, Any]:
        return self._record.loaded()

    @property
    def payload(self) -> Any:
        return self._record.loaded().get("payload")

    @property
    def queue_name(self) -> str:
        return self.queue.name

    @property
    def opts(self) -> dict[str, Any]:
        return self._record.opts.public()

    @property
    def priority(self) -> int:
        return self._record.priority

    @property
    def timestamp(self) -> int:
        return self._record.timestamp

    @property
    def attempts_made(self) -> int:
        return self._record.attempts_made

    @property
    def progress(self) -> Any:
        return self._record.progress

    @property
    def state(self) -> JobState:
        """The state when this handle was last read (``get_state()`` asks Redis)."""
        return self._record.state

    @property
    def returnvalue(self) -> Any:
        return self._record.returnvalue

    @property
    def failed_reason(self) -> str | None:
        return self._record.failed_reason

    @property
    def processed_on(self) -> int | None:
        return self._record.processed_on

    @property
    def finished_on(self) -> int | None:
        return self._record.finished_on

    @property
    def error_type(self) -> str | None:
        return self._record.error_type

    @property
    def stacktrace(self) -> list[str]:
        """One traceback per failed attempt (truncated, newest frames kept), newest last."""
        return self._record.stacktrace

    # -- cancel, seen from inside a processor -------------------------------------------
    @property
    def cancelled(self) -> bool:
        """True once this job's cancel was requested (inside a worker). Long-running
        thread-mode processors check it (or call ``raise_if_cancelled()``) to stop early:
        a thread cannot be stopped from outside. Outside a worker: always False."""
        return self._cancel_requested is not None and self._cancel_requested.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise ``JobCancelledError`` if this job's cancel was requested (inside a
        worker); the attempt then ends failed with error type ``cancelled``."""
        if self.cancelled:
            raise JobCancelledError(f"job {self.id} of {self.queue.name!r} was cancelled")

    # -- operations (one definition, bound to sync or asyncio below) -------------------
    def _refresh(self: JB) -> Op[JB]:
        record = yield from self.queue.ops.get_job(self.id)
        if record is None:
            raise JobNotFoundError(f"job {self.id} not found in queue {self.queue.name!r}")
        self._record = record
        return self

    def _status(self) -> Op[JobStatus]:
        yield from self._refresh()
        return self._record.to_status()

    def _get_state(self) -> Op[JobState]:
        yield from self._refresh()
        return self._record.state

    def _result(self, timeout: float | None = None) -> Op[Any]:
        if otel.ENABLED:  # a "wait <queue>" span
            return (yield from otel.waiting(self.queue.name, [self.id],
                                            self._result_op(timeout)))
        return (yield from self._result_op(timeout))

    def _result_op(self, timeout: float | None) -> Op[Any]:
        # (a frame/Series/array result is an artifact: QueueOps.outcomes reads and checks it)
        # (since: where the add that made it was in the event stream, when it was this one)
        return (yield from self.queue.ops.wait_result(self.id, timeout, self._record.since))

    def _remove(self) -> Op[bool]:
        return (yield from self.queue.ops.remove(self.id))

    def _retry(self) -> Op[bool]:
        """Move this failed job back to wait (attempts reset)."""
        return bool((yield from self.queue.ops.retry_failed(0, self.id)))

    def _promote(self) -> Op[None]:
        """Run this delayed job now (``JobStateError`` if it is not delayed)."""
        yield from self.queue.ops.promote(self.id)
        self._record.state = JobState.WAITING
        self._record.delay = 0

    def _change_priority(self, priority: Any, lifo: bool = False) -> Op[None]:
        """Move this waiting or delayed job to priority level ``priority`` (its back;
        ``lifo=True``: its front). ``JobStateError`` if it is active or finished."""
        yield from self.queue.ops.change_priority(self.id, priority, lifo)
        self._record.opts = replace(self._record.opts, priority=parse_priority(priority))

    def _update_data(self, data: Mapping[str, Any]) -> Op[None]:
        """Replace this job's data (same rules and size limit as ``add``); ``JobStateError``
        once it has finished. A processor may call it on its own job (a checkpoint)."""
        yield from self.queue.ops.update_data(self.id, data)
        self._record.data = dict(data)

    def _cancel(self) -> Op[bool]:
        """Cancel this job (see ``Queue.cancel``)."""
        return (yield from self.queue.ops.cancel(self.id))

    def _get_logs(self) -> Op[list[str]]:
        """This job's log lines, oldest first."""
        return (yield from self.queue.ops.get_logs(self.id))

    def _log(self, message: Any) -> Op[int]:
        return (yield from self.queue.ops.append_logs({self.id: [str(message)]}))

    def _in_worker_log(self, message: Any) -> _Done:
        self._sink.report_log(self.id, str(message))  # type: ignore[union-attr]
        return _Done()

    def _dependency_results(self) -> Op[dict[str, Any]]:
        """{"<queue>:<id>": result} of the jobs this one depended on (``depends_on``) that
        completed; ``{}`` for a job without dependencies. Read once, then cached. A
        dependency's frame/Series/array result is read from its artifact (hash-checked;
        it lives as long as that dependency's job)."""
        cached: dict[str, Any] | None = self.__dict__.get("_dep_results")
        if cached is None:  # (no attribute set in __init__: nothing on the per-job path)
            found = yield from flows.dependency_results(self.queue.ops, self.id)
            values = yield from resolve_many(self.queue.ops.keys, list(found.items()))
            cached = dict(zip(found, values))
            self.__dict__["_dep_results"] = cached
        return dict(cached)

    def _update_progress(self, value: Any) -> Op[bool]:
        ok = yield from self.queue.ops.update_progress(self.id, value)
        self._record.progress = value
        return ok

    def _in_worker_progress(self, value: Any) -> _Done:
        dumps(value, "progress")  # a bad value fails here, in the processor, not later
        self._record.progress = value
        self._sink.report_progress(self, value)  # type: ignore[union-attr]
        return _Done()

    # -- display -------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.queue.name}:{self.id} {self.name!r} "
                f"state={self._record.state.value}>")

    def _repr_html_(self) -> str:
        return job_html(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(job_text(self))


class Job(JobBase):
    """A job handle with blocking methods (``nbqueue.aio.Job`` has awaitable ones)."""

    refresh = sync_method(JobBase._refresh)
    status = sync_method(JobBase._status)
    get_state = sync_method(JobBase._get_state)
    remove = sync_method(JobBase._remove)
    retry = sync_method(JobBase._retry)
    promote = sync_method(JobBase._promote)
    change_priority = sync_method(JobBase._change_priority)
    update_data = sync_method(JobBase._update_data)
    cancel = sync_method(JobBase._cancel)
    get_logs = sync_method(JobBase._get_logs)
    dependency_results = sync_method(JobBase._dependency_results)
    _update_progress_now = sync_method(JobBase._update_progress)
    _log_now = sync_method(JobBase._log)

    def _run(self, op: Op[Any]) -> Any:
        return self.queue._run(op)

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the job's return value (raises ``JobFailedError`` if it failed,
        ``TimeoutError`` after ``timeout`` s). In a notebook, dashboard clicks are handled
        while it waits (``nbqueue.kernel``)."""
        from .kernel import cooperative

        return self._run(cooperative(self._result(timeout)))

    def _repr_html_(self) -> str:
        self._refresh_for_display()
        return super()._repr_html_()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        self._refresh_for_display()
        super()._repr_pretty_(p, cycle)

    def _refresh_for_display(self) -> None:
        """A displayed handle shows the job as it is now (one round trip), not as it was
        when the handle was made; inside a processor, or with Redis away, the last read."""
        if self._sink is None:
            try:
                self.refresh()
            except Exception:
                pass

    def update_progress(self, value: Any) -> bool | _Done:
        """Report progress (a number 0-100 or any JSON value); inside a worker it is batched."""
        if self._sink is not None:
            return self._in_worker_progress(value)
        return self._update_progress_now(value)

    def log(self, message: Any) -> int | _Done:
        """Append a line to the job's log (inside a worker: batched with the next flush,
        like progress). Read it with ``get_logs()`` / ``Queue.get_job_logs(id)``."""
        if self._sink is not None:
            return self._in_worker_log(message)
        return self._log_now(message)


class AsyncJob(JobBase):
    """A job handle whose methods are awaitable (``nbqueue.aio.Job``)."""

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
    dependency_results = async_method(JobBase._dependency_results)
    _update_progress_now = async_method(JobBase._update_progress)
    _log_now = async_method(JobBase._log)

    async def _run(self, op: Op[Any]) -> Any:
        return await self.queue._run(op)

    def update_progress(self, value: Any) -> Awaitable[bool | None]:
        """Report progress; returns an awaitable (inside a worker, awaiting is optional)."""
        if self._sink is not None:
            return self._in_worker_progress(value)
        return self._update_progress_now(value)

    def log(self, message: Any) -> Awaitable[int | None]:
        """Append a line to the job's log; returns an awaitable (inside a worker the line
        is batched and awaiting is optional)."""
        if self._sink is not None:
            return self._in_worker_log(message)
        return self._log_now(message)
