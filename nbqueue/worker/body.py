"""The job body: what running ONE attempt of a job is, in every run mode.

``JobBody`` is the one place where a processor is called: the job's output is captured
into its log (``capture``), the per-job hooks run (``before(job)``, ``after(job,
outcome)``), the processor is called (awaited for an async one), a frame/Series/array
result is stored as an artifact, and the way the attempt ended is classified into an
:class:`~nbqueue.records.Outcome` (``classify``: the retry rules). Thread mode runs
``JobBody.run`` on a job thread, asyncio mode awaits ``JobBody.run_async`` in a task, and
a process-mode child runs one of them for each job the parent hands it (``process``).

Per-job hooks (``Worker(..., hooks=[...])``): objects with ``before(job)`` and
``after(job, outcome)`` (see :class:`JobHook`), called in the job's own context (its
thread, its task, its child process) around the processor: ``before`` once the job's
output is routed to its log, ``after`` once the outcome is known (``outcome.kind``:
completed, failed, exhausted or retry; ``outcome.error_type``), in reverse order (hooks
nest like ``with`` blocks). A hook that raises is
logged and ignored: it never fails the job. In process mode the hooks travel to the
children with the processor (pickled by value), so they must be picklable; each child
has its own copies. Architecture: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .. import otel
from ..arrowcodec import kind_of
from ..backoff import BackoffStrategy
from ..dataplane import store_result
from ..errors import JobCancelledError, JobTimeoutError, UnrecoverableError
from ..job import JobBase
from ..processor import Processor
from ..records import JobRecord, Outcome, OutcomeKind
from ..serialization import dumps
from . import capture

log = logging.getLogger("nbqueue.worker")

MAX_TRACE_FRAMES = 30  # the newest frames of a failed attempt's traceback
MAX_TRACE_CHARS = 8_000  # and at most this much of its text (the end kept)


class JobHook(Protocol):
    """A per-job hook (``Worker(..., hooks=[hook])``): both methods run in the job's own
    context, around the processor; what they raise is logged, never the job's failure."""

    def before(self, job: JobBase) -> None: ...

    def after(self, job: JobBase, outcome: Outcome) -> None: ...


def format_traceback(error: BaseException) -> str:
    """A failed attempt's traceback as stored on the job: the newest frames (the body's
    own frame, the oldest, left out), cut to ``MAX_TRACE_CHARS`` from the end."""
    tb = error.__traceback__
    if tb is None:
        return ""
    if tb.tb_next is not None and tb.tb_frame.f_globals.get("__name__") == __name__:
        tb = tb.tb_next  # the body that called the processor
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


def timeout_outcome(job: JobRecord, strategy: BackoffStrategy | None = None) -> Outcome:
    """An attempt that overran its ``timeout`` (stopped from outside: thread, process)."""
    error = JobTimeoutError(f"job exceeded its timeout of {job.opts.timeout} ms")
    return classify(job, None, error, strategy)


def safe_classify(record: JobRecord, result: Any, error: BaseException | None,
                  strategy: BackoffStrategy | None, job: Any) -> Outcome:
    """``classify`` that cannot raise: a hostile exception (one whose ``str()`` raises, say)
    must fail its job, not kill the thread or task that ran it."""
    try:
        return classify(record, result, error, strategy, job)
    except Exception as exc:
        return Outcome(record, OutcomeKind.FAILED,
                       f"could not record the outcome: {type(exc).__name__}", type(exc).__name__)


def cancel_requested(job: JobBase) -> bool:
    """Whether ``job``'s cancel was requested already (without making its event)."""
    event = job.__dict__.get("_cancel_event")
    return event is not None and event.is_set()


LogSink = Callable[[str, str], None]


def _corrupt(record: JobRecord) -> Outcome | None:
    """Decode the job's data (kept as text by the fetch: ``JobRecord.loaded``); data that is
    not a JSON object fails the job at once, unrun, as a fetch used to (error type
    ``corrupt``)."""
    try:
        record.loaded()
    except (TypeError, ValueError) as exc:
        return Outcome(record, OutcomeKind.FAILED, f"corrupt job hash: {exc}", "corrupt")
    return None


class JobBody:
    """ONE attempt of a job, the same in every mode (see the module docstring).

    ``log_sink(job_id, line)`` receives the job's captured output; ``hooks`` run around
    each attempt; ``run_awaitable`` (thread mode) runs the awaitable a sync processor
    returned on the engine's loop."""

    def __init__(self, processor: Processor, log_sink: LogSink, *,
                 backoff_strategy: BackoffStrategy | None = None,
                 hooks: Sequence[JobHook] = (),
                 run_awaitable: Callable[[Any], Any] | None = None) -> None:
        self.processor = processor
        self.log_sink = log_sink
        self.backoff_strategy = backoff_strategy
        self.hooks = tuple(hooks)
        self.run_awaitable = run_awaitable

    def run(self, record: JobRecord, job: JobBase) -> tuple[Outcome, float]:
        """A sync processor's attempt (a job thread, a process-mode child): its outcome
        and how long it took."""
        started = time.monotonic()
        corrupt = _corrupt(record)
        if corrupt is not None:
            return corrupt, 0.0
        result: Any = None
        error: BaseException | None = None
        with capture.job_output(record.id, self.log_sink):
            if self.hooks:
                self._before(job)
            try:
                event = job.__dict__.get("_cancel_event")  # (cancel_requested, inlined)
                if event is not None and event.is_set():  # cancelled before it started
                    raise JobCancelledError(f"job {record.id} was cancelled")  # never runs
                result = self.processor(job)
                # a sync function that returned a coroutine (None, the usual result: no call)
                if result is not None and inspect.isawaitable(result):
                    result = (self.run_awaitable(result) if self.run_awaitable is not None
                              else asyncio.run(_awaited(result)))
                if result is not None and kind_of(result) is not None:
                    result = store_result(job, result)  # a frame/Series/array: an artifact
            except BaseException as exc:  # the processor's failure is the job's, not ours
                error = exc
            outcome = safe_classify(record, result, error, self.backoff_strategy, job)
            if self.hooks:
                self._after(job, outcome)
        return outcome, time.monotonic() - started

    async def run_async(self, record: JobRecord, job: JobBase,
                        then: Callable[[JobRecord, Outcome, float], None] | None = None,
                        ) -> tuple[Outcome, float]:
        """An async processor's attempt (a task on the engine's loop, or on a child's):
        its ``timeout`` is enforced here. A cancel of the task ends the attempt as
        cancelled when the job's cancel was requested (``job.cancel()``); any other
        cancellation (the worker stopping) propagates. ``then(record, outcome,
        duration)``: called with the result (what the asyncio runner books)."""
        started = time.monotonic()
        corrupt = _corrupt(record)
        if corrupt is not None:
            if then is not None:
                then(record, corrupt, 0.0)
            return corrupt, 0.0
        timeout = record.opts.timeout / 1000 if record.opts.timeout else None
        result: Any = None
        error: BaseException | None = None
        with capture.job_output(record.id, self.log_sink):
            if self.hooks:
                self._before(job)
            cancelled = False
            try:
                event = job.__dict__.get("_cancel_event")  # (cancel_requested, inlined)
                if event is not None and event.is_set():
                    raise JobCancelledError(f"job {record.id} was cancelled")
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
                if not cancel_requested(job):
                    raise  # the worker is stopping: the job goes back, not an attempt
                cancelled = True
            except BaseException as exc:  # the processor's failure is the job's, not ours
                error = exc
            if cancelled:
                outcome = cancelled_outcome(record)
            else:
                outcome = safe_classify(record, result, error, self.backoff_strategy, job)
            if self.hooks:
                self._after(job, outcome)
        duration = time.monotonic() - started
        if then is not None:
            then(record, outcome, duration)
        return outcome, duration

    def _before(self, job: JobBase) -> None:
        for hook in self.hooks:
            try:
                hook.before(job)
            except Exception:
                log.exception("job hook %r failed before job %s (ignored)", hook, job.id)

    def _after(self, job: JobBase, outcome: Outcome) -> None:
        for hook in reversed(self.hooks):  # the first hook's before is the last's after
            try:
                hook.after(job, outcome)
            except Exception:
                log.exception("job hook %r failed after job %s (ignored)", hook, job.id)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class SpanScope:
    """The engine's own per-job hook when tracing is on (``nbqueue.otel``): the attempt's
    span, made by ``Execution`` in the engine's process, is current while a thread or
    asyncio body runs, so the spans the processor makes nest under it."""

    def __init__(self, spans: Mapping[str, Any]) -> None:
        self.spans = spans

    def before(self, job: JobBase) -> None:
        span = self.spans.get(job._record.id)
        if span is None:  # no span for this attempt (otel.attempt_span): nothing to do
            return
        scope = otel.current(span)
        scope.__enter__()
        job.__dict__["_otel_scope"] = scope

    def after(self, job: JobBase, outcome: Outcome) -> None:
        scope = job.__dict__.pop("_otel_scope", None)
        if scope is not None:
            scope.__exit__(None, None, None)


def check_hooks(hooks: object) -> tuple[JobHook, ...]:
    """``Worker(hooks=...)``: a sequence of objects with ``before`` and ``after``."""
    if hooks is None:
        return ()
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Sequence):
        raise TypeError(f"hooks must be a list of objects with before(job) and "
                        f"after(job, outcome) methods, not {type(hooks).__name__}")
    for hook in hooks:
        for name in ("before", "after"):
            if not callable(getattr(hook, name, None)):
                raise TypeError(f"job hook {hook!r} has no {name}() method: a hook has "
                                "before(job) and after(job, outcome)")
    return tuple(hooks)
