"""Job execution: the slots, the async and thread runners, deadlines, and ``classify``.

``Execution`` owns the jobs a worker holds, by id: ``running`` (started) and ``ready``
(prefetched: locked for this worker, not started yet). A finished attempt is classified
into an :class:`~nbqueue.ops.Outcome`, booked in the outbox, and its slot goes to the next
ready job at once.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import otel
from ..arrowcodec import kind_of
from ..backoff import BackoffStrategy
from ..dataplane import store_result
from ..errors import JobCancelledError, JobTimeoutError, UnrecoverableError
from ..job import JobBase, ProgressSink
from ..processor import Processor
from ..records import JobRecord, Outcome, OutcomeKind
from ..serialization import dumps
from . import capture
from .outbox import Outbox
from .threads import JobThreads

if TYPE_CHECKING:
    from .process import ChildPool

log = logging.getLogger("nbqueue.worker")

JobFactory = Callable[[JobRecord, ProgressSink], JobBase]
"""Builds the handle a processor receives for a fetched job (bound to the outbox)."""


MAX_TRACE_FRAMES = 30  # the newest frames of a failed attempt's traceback
MAX_TRACE_CHARS = 8_000  # and at most this much of its text (the end kept)


def format_traceback(error: BaseException) -> str:
    """A failed attempt's traceback as stored on the job: the newest frames (the runner's
    own frame, the oldest, left out), cut to ``MAX_TRACE_CHARS`` from the end."""
    tb = error.__traceback__
    if tb is None:
        return ""
    if tb.tb_next is not None and tb.tb_frame.f_globals.get("__name__") == __name__:
        tb = tb.tb_next  # the runner that called the processor
    lines = traceback.format_exception(type(error), error, tb, limit=-MAX_TRACE_FRAMES)
    text = "".join(lines)
    if len(text) > MAX_TRACE_CHARS:
        text = "[traceback cut]\n..." + text[-MAX_TRACE_CHARS:]
    return text


def classify(job: JobRecord, result: Any = None, error: BaseException | None = None,
             backoff_strategy: BackoffStrategy | None = None,
             job_handle: Any = None) -> Outcome:
    """Turn how an attempt ended into an outcome (the retry rules live here)."""
    etype = ""
    if error is None:
        if result is None:  # the common no-value case, without a JSON round
            return Outcome(job, OutcomeKind.COMPLETED, "null")
        if isinstance(result, Mapping) and result.get("success") is False:
            # The seed's "mark as failed": a structured failure, never retried.
            reason = str(result.get("error") or "processor returned success=False")
            return Outcome(job, OutcomeKind.FAILED, reason, "returned_failure")
        try:
            return Outcome(job, OutcomeKind.COMPLETED,
                           dumps(result, "the processor's return value", strict=False))
        except Exception as exc:  # not storable: this attempt fails, naming the key
            error, etype = exc, "result_not_json"
    if isinstance(error, JobCancelledError) or (
            job_handle is not None and getattr(job_handle, "cancelled", False)):
        return cancelled_outcome(job)
    trace = format_traceback(error) if not etype else ""
    if isinstance(error, UnrecoverableError):
        return Outcome(job, OutcomeKind.FAILED, str(error) or "unrecoverable error",
                       "unrecoverable", stacktrace=trace)
    if not etype:
        etype = "timeout" if isinstance(error, JobTimeoutError) else type(error).__name__
    reason = str(error) or type(error).__name__
    attempts_made = job.attempts_made + 1
    if attempts_made < job.opts.attempts:
        delay = 0
        if job.opts.backoff is not None:
            try:
                delay = job.opts.backoff.compute(attempts_made, error, job_handle,
                                                 backoff_strategy)
            except Exception as exc:  # a broken custom strategy must not lose the job
                log.warning("backoff strategy failed (%s); retrying without delay", exc)
        return Outcome(job, OutcomeKind.RETRY, reason, etype, delay, stacktrace=trace)
    return Outcome(job, OutcomeKind.EXHAUSTED, reason, etype, stacktrace=trace)


def cancelled_outcome(job: JobRecord) -> Outcome:
    """A job stopped by its cancel: failed, not retried, not dead-lettered."""
    return Outcome(job, OutcomeKind.FAILED, "cancelled", "cancelled")


def safe_classify(record: JobRecord, result: Any, error: BaseException | None,
                  strategy: BackoffStrategy | None, job: Any) -> Outcome:
    """``classify`` that cannot raise: a hostile exception (one whose ``str()`` raises, say)
    must fail its job, not kill the thread or task that ran it."""
    try:
        return classify(record, result, error, strategy, job)
    except Exception as exc:
        return Outcome(record, OutcomeKind.FAILED,
                       f"could not record the outcome: {type(exc).__name__}", type(exc).__name__)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _shutdown_outcome(record: JobRecord) -> Outcome:
    return Outcome(record, OutcomeKind.RETRY, "released at worker shutdown", "shutdown",
                   attempts_made=record.attempts_made)


class Execution:
    """The jobs of one worker: slots, runners, deadlines. Lives on the engine's loop."""

    def __init__(self, processor: Processor, concurrency: int, *, is_async: bool,
                 job_factory: JobFactory, outbox: Outbox,
                 backoff_strategy: BackoffStrategy | None = None,
                 children: ChildPool | None = None) -> None:
        self.processor = processor
        self.concurrency = concurrency
        self.is_async = is_async
        self.job_factory = job_factory
        self.outbox = outbox
        self.backoff_strategy = backoff_strategy
        # job id -> (record, its task; None for a sync processor running on a thread)
        self.running: dict[str, tuple[JobRecord, asyncio.Task[None] | None]] = {}
        # Prefetched jobs (locked for us, not started yet): a slot that frees up starts the
        # next one at once instead of waiting for the finish/fetch round trip.
        self.ready: collections.deque[JobRecord] = collections.deque()
        self.deadlines: dict[str, float] = {}  # sync jobs with a timeout: monotonic deadline
        # Sync jobs finished on their threads, handed to the loop in batches (one wake-up).
        self._finished: collections.deque[tuple[JobRecord, Outcome, float]] = \
            collections.deque()
        self._drain_scheduled = False
        self.stopping = False  # set by Engine.request_stop: start nothing new
        self.processed = 0
        self.failed = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._pool: JobThreads | None = None
        # process mode: the executor children that run the bodies (process.py)
        self.children = children
        # handles of running jobs (thread/asyncio), for cancel; async jobs being cancelled
        self._handles: dict[str, JobBase] = {}
        self._cancelling: set[str] = set()
        # OpenTelemetry: the "process <queue>" span of each running attempt (nbqueue.otel)
        self._spans: dict[str, Any] = {}

    def open(self, wake: asyncio.Event) -> None:
        self.loop = asyncio.get_running_loop()
        self._wake = wake
        if self.children is not None:
            self.children.open()
            return
        capture.install()  # print/logging of a processor -> its job's log
        if not self.is_async:
            self._pool = JobThreads(self.concurrency, "nbqueue-job")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        if self.children is not None:
            self.children.close()

    # -- slots -----------------------------------------------------------------------------
    def take(self, record: JobRecord) -> None:
        """A job fetched for us: start it if a slot is free, else keep it ready."""
        if len(self.running) < self.concurrency and not self.stopping:
            self.start(record)
        else:
            self.ready.append(record)

    def start(self, record: JobRecord) -> None:
        if otel.ENABLED:  # the attempt's span, in this process whatever the mode
            self._spans[record.id] = otel.attempt_span(
                self.outbox.ops.name, record.id, record.attempts_made + 1,
                record.opts.trace)
        if self.children is not None:
            self.running[record.id] = (record, None)
            self.children.submit(record)  # its timeout runs from its dispatch to a child
            return
        job = self.job_factory(record, self.outbox)
        self._handles[record.id] = job
        if self.is_async:
            assert self.loop is not None
            self.running[record.id] = (record, self.loop.create_task(self._run_async(record, job)))
            return
        assert self._pool is not None
        self.running[record.id] = (record, None)
        if record.opts.timeout:
            self.deadlines[record.id] = time.monotonic() + record.opts.timeout / 1000
        self._pool.submit(functools.partial(self._run_thread, record, job))

    def complete(self, record: JobRecord, outcome: Outcome, duration: float) -> None:
        """Book a finished attempt; it is sent with the next flush. Its slot goes to the
        next ready job at once."""
        if outcome.kind is OutcomeKind.COMPLETED:
            self.processed += 1
        elif outcome.terminal_failure:
            self.failed += 1
        self.outbox.book(outcome, duration)
        if self._spans:
            span = self._spans.pop(record.id, None)
            if span is not None:
                failed = outcome.kind is not OutcomeKind.COMPLETED
                otel.end_attempt(span, outcome.value if failed else None,
                                 outcome.error_type or None)
        self.deadlines.pop(record.id, None)
        self.running.pop(record.id, None)
        self._handles.pop(record.id, None)
        # a slot that freed goes to the next ready job; a prefetched job that ended without
        # running (its cancel) freed none: nothing starts (issue 21 item 1)
        if self.ready and not self.stopping and len(self.running) < self.concurrency:
            self.start(self.ready.popleft())
        assert self._wake is not None
        self._wake.set()

    def held_locks(self) -> dict[str, str]:
        """job id -> lock token of every job we hold (running or ready)."""
        held = [rec for rec, _ in self.running.values()] + list(self.ready)
        return {rec.id: rec.lock for rec in held if rec.lock}

    def release_all(self) -> list[Outcome]:
        """Stop holding every job (cancel tasks; threads cannot be stopped): each becomes an
        outcome that puts it back in the queue without counting an attempt."""
        outcomes = []
        for record, task in list(self.running.values()):
            if task is not None:
                task.cancel()
            elif self.children is not None:
                self.children.abort(record.id, respawn=False)  # its body must not run on
            outcomes.append(_shutdown_outcome(record))
        outcomes.extend(_shutdown_outcome(record) for record in self.ready)
        for span in self._spans.values():
            otel.end_attempt(span, "handed back: the worker stopped", "shutdown")
        self._spans.clear()
        self.running.clear()
        self.ready.clear()
        self.deadlines.clear()
        self._handles.clear()
        return outcomes

    # -- cancel ----------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        """Stop a job this worker holds (its cancel was requested: cancel.lua). A prefetched
        one fails at once; a running one: asyncio task cancelled, process-mode child
        signalled (killed if it cannot stop), thread mode cooperative (``job.cancelled``)."""
        for record in self.ready:
            if record.id == job_id:
                self.ready.remove(record)
                self.complete(record, cancelled_outcome(record), 0.0)
                return
        entry = self.running.get(job_id)
        if entry is None:
            return  # finished meanwhile (its outcome stands), or not ours any more
        record, task = entry
        handle = self._handles.get(job_id)
        if handle is not None and handle._cancel_requested is not None:
            handle._cancel_requested.set()
        if task is not None:
            self._cancelling.add(job_id)
            task.cancel()
        elif self.children is not None and self.children.cancel(job_id):
            self.complete(record, cancelled_outcome(record), 0.0)  # had not started

    def child_started(self, record: JobRecord) -> None:
        """Process mode: ``record`` went to a child now; its timeout counts from here."""
        if record.opts.timeout and record.id in self.running:
            self.deadlines[record.id] = time.monotonic() + record.opts.timeout / 1000
            assert self._wake is not None
            self._wake.set()  # the loop's wait must end by this deadline

    def let_go(self, record: JobRecord) -> None:
        """Process mode: the child running ``record`` died. Stop holding the job without an
        outcome (its lock is no longer renewed), as if this worker had died: the stalled
        sweep re-queues or fails it by the stalled rules. Its slot goes to the next job."""
        entry = self.running.get(record.id)
        if entry is None or entry[0] is not record:
            return
        self.running.pop(record.id, None)
        self.deadlines.pop(record.id, None)
        span = self._spans.pop(record.id, None)
        if span is not None:
            otel.end_attempt(span, "its child process died", "child_died")
        if self.ready and not self.stopping and len(self.running) < self.concurrency:
            self.start(self.ready.popleft())
        assert self._wake is not None
        self._wake.set()

    def child_done(self, record: JobRecord, outcome: Outcome, duration: float) -> None:
        """Process mode: a child's outcome (or the pool's, for a child it had to kill)."""
        entry = self.running.get(record.id)
        if entry is None or entry[0] is not record:
            return  # timed out or handed back meanwhile: this result is void
        self.complete(record, outcome, duration)

    # -- async runner ----------------------------------------------------------------------
    async def _run_async(self, record: JobRecord, job: JobBase) -> None:
        started = time.monotonic()
        timeout = record.opts.timeout / 1000 if record.opts.timeout else None
        result: Any = None
        error: BaseException | None = None
        try:
            with capture.job_output(record.id, self.outbox.report_log), \
                    otel.current(self._spans.get(record.id)):  # the body's spans nest in it
                work = self.processor(job)
                if timeout is None:
                    result = await work
                else:
                    try:
                        result = await asyncio.wait_for(work, timeout)
                    except asyncio.TimeoutError:
                        raise JobTimeoutError(
                            f"job exceeded its timeout of {record.opts.timeout} ms") from None
            if result is not None and kind_of(result) is not None:
                # a frame/Series/array: stored as an artifact (blocking I/O, off the loop)
                result = await asyncio.to_thread(store_result, job, result)
        except asyncio.CancelledError:
            if record.id in self._cancelling:  # job.cancel(): the job ends, failed
                self._cancelling.discard(record.id)
                self.complete(record, cancelled_outcome(record), time.monotonic() - started)
                return
            self.running.pop(record.id, None)
            self._handles.pop(record.id, None)
            raise
        except BaseException as exc:  # the processor's failure is the job's, not ours
            error = exc
        self.complete(record, safe_classify(record, result, error, self.backoff_strategy,
                                            job), time.monotonic() - started)

    # -- thread runner ---------------------------------------------------------------------
    def _run_thread(self, record: JobRecord, job: JobBase) -> None:
        """On a job thread: run a sync processor, classify, hand the outcome to the loop."""
        started = time.monotonic()
        result: Any = None
        error: BaseException | None = None
        try:
            with capture.job_output(record.id, self.outbox.report_log), \
                    otel.current(self._spans.get(record.id)):  # the body's spans nest in it
                result = self.processor(job)
            # a sync function that returned a coroutine (None, the usual result: no call)
            if result is not None and inspect.isawaitable(result):
                assert self.loop is not None
                result = asyncio.run_coroutine_threadsafe(_awaited(result), self.loop).result()
            if result is not None and kind_of(result) is not None:
                result = store_result(job, result)  # a frame/Series/array: an artifact
        except BaseException as exc:  # the processor's failure is the job's, not ours
            error = exc
        outcome = safe_classify(record, result, error, self.backoff_strategy, job)
        self._finished.append((record, outcome, time.monotonic() - started))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            assert self.loop is not None
            try:
                self.loop.call_soon_threadsafe(self._drain_finished)
            except RuntimeError:
                pass  # the engine is gone: the job was handed back at shutdown

    def _drain_finished(self) -> None:
        """On the loop: collect what the job threads finished since the last call."""
        self._drain_scheduled = False
        while self._finished:
            record, outcome, duration = self._finished.popleft()
            entry = self.running.get(record.id)
            if entry is None or entry[0] is not record:
                continue  # timed out or handed back meanwhile: this result is void
            self.complete(record, outcome, duration)

    # -- deadlines (sync jobs) -------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return min(self.deadlines.values()) if self.deadlines else None

    def expire_deadlines(self) -> None:
        """Fail sync jobs past their timeout (their threads cannot be stopped: see
        docs/reliability.md, "Known limits")."""
        if not self.deadlines:
            return
        now = time.monotonic()
        for job_id, deadline in list(self.deadlines.items()):
            if now < deadline:
                continue
            record = self.running[job_id][0]
            error = JobTimeoutError(f"job exceeded its timeout of {record.opts.timeout} ms")
            if self._pool is not None:
                self._pool.size += 1  # the stuck thread runs on; keep our concurrency
            if self.children is not None:
                self.children.abort(job_id)  # kill its child (a new one takes its place)
            self.complete(record, classify(record, None, error, self.backoff_strategy),
                          (record.opts.timeout or 0) / 1000)

    def describe(self) -> str:
        extra = f" {self.children.describe()}" if self.children is not None else ""
        return f"running={sorted(self.running)} ready={[r.id for r in self.ready]}{extra}"
