"""Fakes for testing the worker's parts without Redis: a runner that records what it is
told, and an executor that answers an op's steps from canned replies (the same shapes the
scripts return; tests against a real Redis cover the scripts themselves)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from nbqueue.job import Job
from nbqueue.options import default_options
from nbqueue.protocol import Op, Step
from nbqueue.queue import Queue
from nbqueue.records import JobRecord, Outcome
from nbqueue.types import JobState
from nbqueue.worker.runners import Done, Started

QUEUE = Queue("wq", "redis://127.0.0.1:1/0")  # never connected: the parts under test do no I/O


def record(job_id: str, *, timeout: int | None = None, attempts: int = 1,
           data: dict[str, Any] | None = None) -> JobRecord:
    opts = default_options({"timeout": timeout, "attempts": attempts})
    return JobRecord(job_id, "t", data or {"type": "t"}, opts, JobState.ACTIVE, lock="L" + job_id)


class Sink:
    """A ``ProgressSink`` (and log sink) that keeps what it gets."""

    def __init__(self) -> None:
        self.progress: list[tuple[str, Any]] = []
        self.lines: list[tuple[str, str]] = []

    def report_progress(self, job: Any, value: Any) -> None:
        self.progress.append((job.id, value))

    def report_log(self, job_id: str, line: str) -> None:
        self.lines.append((job_id, line))


def handle(rec: JobRecord, sink: Sink | None = None) -> Job:
    return Job(QUEUE, rec, sink=sink or Sink())


class FakeRunner:
    """A ``Runner`` that records the calls; the test reports outcomes itself."""

    is_async = False

    def __init__(self, holds: int = 0, cancel_unstarted: bool = False) -> None:
        self.holds = holds
        self.cancel_unstarted = cancel_unstarted
        self.started_ids: list[str] = []
        self.cancelled: list[str] = []
        self.aborted: list[tuple[str, bool]] = []
        self.held: list[JobRecord] = []
        self.closed = False
        self.done: Done | None = None
        self.started: Started | None = None

    def open(self, done: Done, started: Started) -> None:
        self.done, self.started = done, started

    def start(self, record: JobRecord) -> None:
        self.started_ids.append(record.id)

    def cancel(self, record: JobRecord) -> bool:
        self.cancelled.append(record.id)
        return self.cancel_unstarted

    def abort(self, record: JobRecord, stopping: bool = False) -> None:
        self.aborted.append((record.id, stopping))

    def unhold(self) -> list[JobRecord]:
        back, self.held = self.held, []
        return back

    def close(self) -> None:
        self.closed = True

    def describe(self) -> str:
        return "fake"


class FakeExecutor:
    """Runs an op like ``protocol.run_async`` would, answering each step with the next
    canned reply; keeps the steps it saw."""

    def __init__(self, replies: Iterable[Any] = ()) -> None:
        self.replies = list(replies)
        self.steps: list[Step] = []

    def add(self, *replies: Any) -> None:
        self.replies.extend(replies)

    async def __call__(self, op: Op[Any]) -> Any:
        try:
            step = next(op)
            while True:
                self.steps.append(step)
                if not self.replies:
                    raise AssertionError(f"no canned reply left for {step}")
                step = op.send(self.replies.pop(0))
        except StopIteration as stop:
            return stop.value


def outcome_of(done: list[tuple[JobRecord, Outcome, float]], job_id: str) -> Outcome:
    return next(o for r, o, _ in done if r.id == job_id)


def new_event() -> asyncio.Event:
    return asyncio.Event()
