"""The outbox: what a worker owes Redis, gathered on the loop and sent in batches.

Finished attempts (outcomes), progress reports, duration/error counters and dead-letter
entries wait here until the engine's next flush, which sends them with the fetch of the
next jobs in one round trip (``finish.lua``). Per-job data that should reach Redis with a
job's outcome (logs, say) belongs here too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, TypeVar

from .. import stats as stats_mod
from ..job import JobBase
from ..keys import DEAD_LETTER_QUEUE
from ..ops import QueueOps
from ..protocol import Op, run_async
from ..records import JobRecord, Outcome, OutcomeKind, dead_letter_entry

log = logging.getLogger("nbqueue.worker")

Parcel = tuple[list[Outcome], dict[str, Any], dict[str, list[str]], Counter[str]]
"""What one flush sends: outcomes, progress, log lines, counters."""

T = TypeVar("T")
STATS_EVERY_S = 1.0  # duration/error counters reach Redis at most this often (or when idle)


class Outbox:
    """Outcomes, progress, counters and dead letters waiting for the next flush."""

    def __init__(self, ops: QueueOps, *, dead_letter: bool, prefix: str) -> None:
        self.ops = ops
        self.done: list[Outcome] = []
        self.progress: dict[str, Any] = {}
        self.logs: dict[str, list[str]] = {}  # job id -> lines (job.log), sent in one call
        self.stats: Counter[str] = Counter()
        self.stats_sent = 0.0
        self.dead_letter = dead_letter
        self._dlq = QueueOps(DEAD_LETTER_QUEUE, prefix=prefix)
        self._letters: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.client: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._loop_thread: threading.Thread | None = None

    def open(self, client: Any, wake: asyncio.Event) -> None:
        """Bind to the running loop (called by the engine as it starts)."""
        self.client = client
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        self._wake = wake

    async def run(self, op: Op[T]) -> T:
        """Run ``op`` on the engine's client (tests drive the ops with a fake executor)."""
        return await run_async(self.client, op)

    @property
    def pending(self) -> bool:
        """Outcomes, progress or log lines not sent yet (counters alone can wait)."""
        return bool(self.done or self.progress or self.logs)

    # -- filled from the loop ----------------------------------------------------------
    def book(self, outcome: Outcome, duration: float) -> None:
        """A finished attempt: counted now, sent with the next flush."""
        stats_mod.record(self.stats, duration,
                         outcome.error_type if outcome.kind is not OutcomeKind.COMPLETED else None)
        stats_mod.record_wait(self.stats, outcome.job.wait_ms)  # first attempts only
        self.done.append(outcome)

    def report_progress(self, job: JobBase, value: Any) -> None:
        """Called by ``job.update_progress`` from a processor (any thread)."""
        loop = self.loop
        if loop is None:
            return
        if threading.current_thread() is self._loop_thread:
            self._put_progress(job.id, value)
        else:
            loop.call_soon_threadsafe(self._put_progress, job.id, value)

    def put_progress(self, job_id: str, value: Any) -> None:
        """Progress of ``job_id`` reported on the loop (process mode: from a child)."""
        self._put_progress(job_id, value)

    def _put_progress(self, job_id: str, value: Any) -> None:
        self.progress[job_id] = value
        assert self._wake is not None
        self._wake.set()

    def report_log(self, job_id: str, line: str) -> None:
        """Called by ``job.log`` from a processor (any thread)."""
        loop = self.loop
        if loop is None:
            return
        if threading.current_thread() is self._loop_thread:
            self._put_log(job_id, line)
        else:
            loop.call_soon_threadsafe(self._put_log, job_id, line)

    def _put_log(self, job_id: str, line: str) -> None:
        self.logs.setdefault(job_id, []).append(line)
        assert self._wake is not None
        self._wake.set()

    # -- a flush ---------------------------------------------------------------------------
    def stats_due_in(self) -> float:
        """Seconds until the counters are due (<= 0: now)."""
        return self.stats_sent + STATS_EVERY_S - time.monotonic()

    def take(self, stats_now: bool = False) -> Parcel:
        """Everything to send now. Counters ride along at most once a second (or when
        asked): they are a few commands each, and a steady drain has many small batches."""
        done, self.done = self.done, []
        progress, self.progress = self.progress, {}
        logs, self.logs = self.logs, {}
        stats: Counter[str] = Counter()
        if self.stats:
            now = time.monotonic()
            if stats_now or now - self.stats_sent >= STATS_EVERY_S:
                stats, self.stats = self.stats, Counter()
                self.stats_sent = now
        return done, progress, logs, stats

    def restore(self, parcel: Parcel) -> None:
        """Put back what a failed flush could not send. Nothing is lost: the scripts are
        idempotent for a given lock, so re-sending a batch that did land is rejected."""
        done, progress, logs, stats = parcel
        self.done = done + self.done
        for k, v in progress.items():
            self.progress.setdefault(k, v)
        for k, lines in logs.items():
            self.logs[k] = lines + self.logs.get(k, [])
        self.stats.update(stats)

    async def send_extras(self, progress: dict[str, Any], logs: dict[str, list[str]]) -> None:
        """Progress reports (one call each) and log lines (one call for all jobs)."""
        for job_id, value in progress.items():
            await self.run(self.ops.update_progress(job_id, value))
        if logs:
            await self.run(self.ops.append_logs(logs))

    def settle(self, oks: Sequence[bool], done: Sequence[Outcome]) -> None:
        """Read the finish script's verdicts: warn about dropped outcomes, and queue a
        dead-letter entry for each terminal failure it accepted."""
        for ok, outcome in zip(oks, done):
            if not ok:
                log.warning("job %s of %s finished after its lock was lost (stalled and "
                            "re-queued, or removed); its outcome was dropped",
                            outcome.job.id, self.ops.name)
            elif (outcome.kind is not OutcomeKind.COMPLETED  # (no property call per job)
                  and outcome.terminal_failure and outcome.error_type != "cancelled"):
                self.add_dead_letter(outcome.job, outcome.value, outcome.error_type)

    # -- dead letters ----------------------------------------------------------------------
    def add_dead_letter(self, record: JobRecord, reason: str, error_type: str) -> None:
        if self.dead_letter:
            self._letters.append(dead_letter_entry(self.ops.name, record, reason, error_type))

    @property
    def has_dead_letters(self) -> bool:
        return bool(self._letters)

    async def send_dead_letters(self) -> None:
        """All queued dead-letter entries in one call (the jobs are safely failed already,
        so an error here is logged, not retried)."""
        letters, self._letters = self._letters, []
        if not letters:
            return
        try:
            await self.run(self._dlq.add_dead_letters(letters))
        except Exception as exc:
            ids = ", ".join(str(data["payload"]["job_id"]) for data, _ in letters)
            log.error("could not record jobs %s in the dead-letter queue: %s", ids, exc)

    def describe(self) -> str:
        return (f"done={[o.job.id for o in self.done]} progress={sorted(self.progress)} "
                f"logs={sorted(self.logs)}")
