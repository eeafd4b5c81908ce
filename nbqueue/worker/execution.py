"""Execution: the jobs a worker holds, by id, and when each may run.

``Execution`` keeps ``running`` (handed to the runner: started, or held by a process-mode
child as its next job) and ``ready`` (prefetched: locked for this worker, not handed to
the runner yet), and the ``deadlines`` of the jobs whose runner cannot stop a body by
itself (thread and process mode). WHERE a body runs is the runner's business
(``runners``: thread, asyncio; ``process``: child processes), and WHAT running one is,
the job body's (``body``). A finished attempt is booked in the outbox and its slot goes
to the next ready job at once. Architecture: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

from .. import otel
from ..backoff import BackoffStrategy
from ..records import JobRecord, Outcome, OutcomeKind
from .body import cancelled_outcome, timeout_outcome
from .outbox import Outbox
from .prefetch import Prefetch, PrefetchArg
from .runners import Runner

log = logging.getLogger("nbqueue.worker")

#: How long a cancel of a job this worker does not hold (yet) is remembered: the reply of
#: the fetch that locked the job for us may be read after the cancel listener's message.
EARLY_CANCEL_S = 5.0


def _shutdown_outcome(record: JobRecord) -> Outcome:
    return Outcome(record, OutcomeKind.RETRY, "released at worker shutdown", "shutdown",
                   attempts_made=record.attempts_made)


class Execution:
    """The jobs of one worker: slots, ready jobs, deadlines. Lives on the engine's loop."""

    def __init__(self, runner: Runner, concurrency: int, *, outbox: Outbox,
                 backoff_strategy: BackoffStrategy | None = None,
                 spans: dict[str, Any] | None = None,
                 prefetch: PrefetchArg = 0) -> None:
        self.runner = runner
        self.concurrency = concurrency
        # the runner takes this many at once: a process-mode child also holds its next job
        self.capacity = concurrency + runner.holds
        self.is_async = runner.is_async
        self.outbox = outbox
        self.backoff_strategy = backoff_strategy
        # job id -> record of every job handed to the runner
        self.running: dict[str, JobRecord] = {}
        # Prefetched jobs (locked for us, not started yet): a slot that frees up starts the
        # next one at once instead of waiting for the finish/fetch round trip.
        self.ready: collections.deque[JobRecord] = collections.deque()
        self.prefetch = Prefetch(prefetch, concurrency)  # how many to hold in ``ready``
        self.deadlines: dict[str, float] = {}  # jobs with a timeout the runner cannot stop
        self.stopping = False  # set by Engine.request_stop: start nothing new
        self.processed = 0
        self.failed = 0
        self._wake: asyncio.Event | None = None
        # OpenTelemetry: the "process <queue>" span of each attempt handed to the runner,
        # made here in every mode (the parent in process mode); ``body.SpanScope`` makes it
        # current while a thread or asyncio body runs (nbqueue.otel)
        self.spans: dict[str, Any] = {} if spans is None else spans
        self._early: dict[str, float] = {}  # cancels of jobs not taken yet: id -> when

    def open(self, wake: asyncio.Event) -> None:
        self._wake = wake
        self.runner.open(self.done, self.started)

    def close(self) -> None:
        self.runner.close()

    # -- slots -----------------------------------------------------------------------------
    def take(self, record: JobRecord) -> None:
        """A job fetched for us: start it if a slot is free, else keep it ready."""
        if self._early and self._early.pop(record.id, None) is not None:
            # its cancel came before the fetch's reply (the listener has its own
            # connection): it never starts
            self.running[record.id] = record
            self.done(record, cancelled_outcome(record), 0.0)
            return
        if len(self.running) < self.capacity and not self.stopping:
            self.running[record.id] = record
            if otel.ENABLED:  # (Execution._span, inlined: the per-job path)
                span = otel.attempt_span(self.outbox.ops.name, record.id,
                                         record.attempts_made + 1, record.opts.trace)
                if span is not None:
                    self.spans[record.id] = span
            self.runner.start(record)
        else:
            self.ready.append(record)

    def done(self, record: JobRecord, outcome: Outcome, duration: float) -> None:
        """Book a finished attempt (a runner's outcome, or one decided here: cancel,
        timeout); it is sent with the next flush and its slot goes to the next ready job at
        once. Void for a job that is not ours any more (timed out, handed back, or the
        record of an earlier attempt)."""
        running = self.running
        if running.get(record.id) is not record:
            return
        if outcome.kind is OutcomeKind.COMPLETED:
            self.processed += 1
        elif outcome.terminal_failure:
            self.failed += 1
        self.outbox.book(outcome, duration)
        self.prefetch.job_done(duration)
        if self.spans:
            span = self.spans.pop(record.id, None)
            if span is not None:
                failed = outcome.kind is not OutcomeKind.COMPLETED
                otel.end_attempt(span, outcome.value if failed else None,
                                 outcome.error_type or None)
        if self.deadlines:
            self.deadlines.pop(record.id, None)
        del running[record.id]
        if self.ready and not self.stopping and len(running) < self.capacity:
            self._start_ready()
        assert self._wake is not None
        self._wake.set()

    def _start_ready(self) -> None:
        record = self.ready.popleft()
        self.running[record.id] = record
        if otel.ENABLED:
            self._span(record)
        self.runner.start(record)

    def _span(self, record: JobRecord) -> None:
        """The attempt's span, in this process whatever the mode (nbqueue.otel)."""
        span = otel.attempt_span(
            self.outbox.ops.name, record.id, record.attempts_made + 1, record.opts.trace)
        if span is not None:
            self.spans[record.id] = span

    def _end_span(self, record: JobRecord, error: str | None, error_type: str | None) -> None:
        span = self.spans.pop(record.id, None)
        if span is not None:
            otel.end_attempt(span, error, error_type)

    # -- what runners report -----------------------------------------------------------------

    def started(self, record: JobRecord) -> None:
        """``record``'s body starts now: its timeout counts from here."""
        if record.opts.timeout and self.running.get(record.id) is record:
            self.deadlines[record.id] = time.monotonic() + record.opts.timeout / 1000
            assert self._wake is not None
            self._wake.set()  # the loop's wait must end by this deadline

    def unhold(self) -> None:
        """The worker is stopping: jobs the runner took but did not start (a process-mode
        child's held job) come back as ready ones (handed back with the others)."""
        for record in reversed(self.runner.unhold()):
            self.running.pop(record.id, None)
            self.deadlines.pop(record.id, None)
            self._end_span(record, "handed back: the worker stopped", "shutdown")
            self.ready.appendleft(record)

    def held_locks(self) -> dict[str, str]:
        """job id -> lock token of every job we hold (running, held or ready)."""
        held = [*self.running.values(), *self.ready]
        return {rec.id: rec.lock for rec in held if rec.lock}

    def release_all(self) -> list[Outcome]:
        """Stop holding every job (bodies stopped where the mode can): each becomes an
        outcome that puts it back in the queue without counting an attempt."""
        outcomes = []
        for record in list(self.running.values()):
            self.runner.abort(record, stopping=True)  # its body must not run on
            outcomes.append(_shutdown_outcome(record))
        outcomes.extend(_shutdown_outcome(record) for record in self.ready)
        for span in self.spans.values():
            otel.end_attempt(span, "handed back: the worker stopped", "shutdown")
        self.spans.clear()
        self.running.clear()
        self.ready.clear()
        self.deadlines.clear()
        return outcomes

    # -- cancel ----------------------------------------------------------------------------
    def cancel(self, job_id: str) -> None:
        """Stop a job this worker holds (its cancel was requested: cancel.lua). A ready one
        fails at once; one handed to the runner is told (asyncio: task cancelled; process
        mode: a held job never starts, a running one's child is signalled, killed if it
        cannot stop; thread mode: cooperative, ``job.cancelled``)."""
        for record in self.ready:
            if record.id == job_id:
                self.ready.remove(record)
                self.running[record.id] = record  # booked like any attempt (no slot taken)
                self.done(record, cancelled_outcome(record), 0.0)
                return
        held = self.running.get(job_id)
        if held is None:
            # finished meanwhile (its outcome stands; finish.lua makes a retry of a job
            # whose cancel was requested that failure too), or fetched for us with a reply
            # not read yet: remembered a moment, so that ``take`` does not start it
            now = time.monotonic()
            self._early = {i: t for i, t in self._early.items() if now - t < EARLY_CANCEL_S}
            self._early[job_id] = now
            return
        if self.runner.cancel(held):
            self.done(held, cancelled_outcome(held), 0.0)  # had not started

    # -- deadlines -------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return min(self.deadlines.values()) if self.deadlines else None

    def expire_deadlines(self) -> None:
        """Fail jobs past their timeout and stop their bodies where the mode can (a thread
        cannot be stopped: see docs/reliability.md, "Known limits")."""
        if not self.deadlines:
            return
        now = time.monotonic()
        for job_id, deadline in list(self.deadlines.items()):
            if now < deadline:
                continue
            record = self.running[job_id]
            self.runner.abort(record)
            self.done(record, timeout_outcome(record, self.backoff_strategy),
                      (record.opts.timeout or 0) / 1000)

    def describe(self) -> str:
        return (f"running={sorted(self.running)} ready={[r.id for r in self.ready]} "
                f"{self.runner.describe()}")
