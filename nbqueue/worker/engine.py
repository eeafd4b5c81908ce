"""The engine: one asyncio loop that coordinates a worker's parts.

- :class:`~.execution.Execution` holds the jobs (slots, ready jobs, deadlines) and hands
  them to the run mode's runner (``runners``: thread, asyncio; ``process``), which runs
  the one job body (``body``) of every mode;
- :class:`~.outbox.Outbox` gathers outcomes, progress, counters and dead letters;
- :class:`~.fetching.Fetcher` fetches (alone or with a flush) and parks when idle;
- :class:`~.upkeep.Upkeep` renews locks, sweeps stalled jobs and heartbeats (registry).

The loop here decides *when*: flush finished work and fetch more, wait (parked) for work,
stop within the grace period, back off after Redis errors. All Redis work of a worker runs
on this one loop; sync processors run on job threads and report back to it.
Architecture: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis

from .. import direct, otel
from ..backoff import BackoffStrategy
from ..connection import Connection
from ..errors import RedisOutOfMemoryError, RedisUnavailableError
from ..job import JobBase, ProgressSink
from ..keys import DEAD_LETTER_QUEUE, DEFAULT_PREFIX
from ..ops import QueueOps
from ..processor import Processor, is_async
from ..protocol import within
from ..queue import AsyncQueue, Queue
from ..reaper import process_identity
from ..records import JobRecord
from .body import JobBody, JobHook, SpanScope
from .execution import Execution
from .fetching import Fetcher
from .outbox import STATS_EVERY_S, Outbox
from .prefetch import PrefetchArg
from .process import ProcessRunner
from .runners import AsyncRunner, JobFactory, Runner, ThreadRunner
from .upkeep import HEARTBEAT_MS, Upkeep

log = logging.getLogger("nbqueue.worker")

COALESCE_S = 0.0005  # a busy thread-mode worker gathers finished jobs this long before a flush
_REDIS_ERRORS = (RedisUnavailableError, redis.RedisError, OSError)


def queue_job_factory(queue_name: str, connection: Connection, prefix: str,
                      asynchronous: bool) -> JobFactory:
    """Handles bound to a ``Queue`` (sync processors) or an ``AsyncQueue`` (async ones)."""
    queue = (AsyncQueue if asynchronous else Queue)(queue_name, connection, prefix=prefix)
    cls = queue.job_class

    def make(record: JobRecord, sink: ProgressSink) -> JobBase:
        return cls(queue, record, sink=sink)

    return make


class Engine:
    """The loop of one worker (see the module docstring). Not thread-safe except where said."""

    def __init__(self, queue_name: str, processor: Processor, connection: Connection, *,
                 prefix: str = DEFAULT_PREFIX, concurrency: int = 1,
                 lock_duration: int = 30_000, stalled_interval: int = 30_000,
                 max_stalled_count: int = 1, backoff_strategy: BackoffStrategy | None = None,
                 dead_letter: bool = True, grace: float = 30.0, prefetch: PrefetchArg = "auto",
                 worker_name: str | None = None,
                 job_factory: JobFactory | None = None, mode: str = "thread",
                 heartbeat_interval: int = HEARTBEAT_MS,
                 process_payload: bytes | None = None,
                 hooks: Sequence[JobHook] = ()) -> None:
        self.queue_name = queue_name
        self.processor = processor
        self.connection = connection
        self.prefix = prefix
        self.concurrency = concurrency
        self.lock_ms = lock_duration
        self.grace = grace
        self.token = worker_name or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.ops = QueueOps(queue_name, prefix=prefix)
        self.ops.lazy_data = True  # job data is decoded by the body (JobRecord.loaded)
        # process mode: this engine runs no job body; ``concurrency`` children do (process.py)
        self.is_async = is_async(processor) and process_payload is None
        if job_factory is None:
            job_factory = queue_job_factory(queue_name, connection, prefix, self.is_async)
        self.outbox = Outbox(self.ops, prefix=prefix,
                             dead_letter=dead_letter and queue_name != DEAD_LETTER_QUEUE)
        spans: dict[str, Any] = {}  # attempt spans (nbqueue.otel): Execution and its hook
        if otel.ENABLED and process_payload is None:
            hooks = (SpanScope(spans), *hooks)  # the span current while a body runs here
        self.jobs = Execution(self._runner(processor, concurrency, job_factory,
                                           backoff_strategy, hooks, process_payload),
                              concurrency, outbox=self.outbox,
                              backoff_strategy=backoff_strategy, spans=spans,
                              prefetch=prefetch)
        self.fetcher = Fetcher(self.ops, self.token, self.lock_ms, self.jobs, self.outbox)
        self.upkeep = Upkeep(self.ops, self.token, lock_ms=self.lock_ms,
                             stalled_ms=stalled_interval, max_stalled=max_stalled_count,
                             jobs=self.jobs, outbox=self.outbox,
                             heartbeat_ms=heartbeat_interval,
                             info={**process_identity(),  # nbqueue/reaper.py
                                   "mode": mode, "concurrency": concurrency},
                             new_client=connection.new_async)
        self.upkeep.on_stop = self.request_stop  # a stop request by id (nbqueue.reaper)
        self.loop: asyncio.AbstractEventLoop | None = None
        # called (on the loop) once the worker is in the registry: Worker.start() waits for it
        self.on_registered: Callable[[], None] | None = None
        self._wake: asyncio.Event | None = None
        self._client: Any = None

    def _runner(self, processor: Processor, concurrency: int, job_factory: JobFactory,
                backoff_strategy: BackoffStrategy | None, hooks: Sequence[JobHook],
                process_payload: bytes | None) -> Runner:
        """The run mode: where the job bodies run (``runners``, ``process``)."""
        if process_payload is not None:  # this engine runs no body: ``concurrency`` children
            return ProcessRunner(concurrency, process_payload, name=self.queue_name,
                                 on_progress=self.outbox.put_progress,
                                 on_log=self.outbox.report_log)
        body = JobBody(processor, self.outbox.report_log, backoff_strategy=backoff_strategy,
                       hooks=hooks)
        if self.is_async:
            return AsyncRunner(body, job_factory, self.outbox)
        return ThreadRunner(body, job_factory, self.outbox, concurrency)

    @property
    def processed(self) -> int:
        return self.jobs.processed

    @property
    def failed(self) -> int:
        return self.jobs.failed

    # -- thread-safe entry points -------------------------------------------------------
    def request_stop(self, grace: float | None = None) -> None:
        """Ask the loop to finish its active jobs and return (callable from any thread).

        Jobs still running after ``grace`` seconds go back to the queue."""
        if grace is not None:
            self.grace = grace
        self.jobs.stopping = True
        if self.loop is not None and self._wake is not None:
            try:
                self.loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass  # the loop is already closed

    def describe(self) -> str:
        """A one-line state dump, for logs when a stop takes longer than it should."""
        return (f"engine {self.token} of {self.queue_name!r}: stopping={self.jobs.stopping} "
                f"{self.jobs.describe()} {self.outbox.describe()}")

    # -- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        if self.is_async:
            direct.LEAN_IO.set(False)  # see there: job tasks finish during a flush
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._client = client = self.connection.new_async()
        self.fetcher.client = client
        self.outbox.open(client, self._wake)
        self.jobs.open(self._wake)
        self.upkeep.client = client
        await self.upkeep.beat()  # registered before the first job: get_workers() lists us
        if self.on_registered is not None:
            self.on_registered()
        self.upkeep.start(client)
        try:
            await self._main()
        finally:
            await self.upkeep.stop()
            await self._release_leftovers()
            self.jobs.close()
            await client.aclose()

    def _want(self) -> int:
        jobs = self.jobs
        if jobs.stopping:
            return 0
        return jobs.capacity + jobs.prefetch.value - len(jobs.running) - len(jobs.ready)

    async def _main(self) -> None:
        assert self._wake is not None
        wake, jobs, outbox, fetcher = self._wake, self.jobs, self.outbox, self.fetcher
        # An idle worker's BLPOP on the marker is pipelined with a fetch: when a job arrives
        # Redis runs the fetch right away, saving a round trip of latency.
        block: asyncio.Task[None] | None = None
        failures = 0
        stop_deadline: float | None = None
        while True:
            # Cleared before looking at the state it guards, so no wake-up is lost.
            wake.clear()
            jobs.expire_deadlines()
            stopping = jobs.stopping
            if stopping:
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + self.grace
                    jobs.unhold()  # held, not started: handed back, never started
                if block is not None:
                    await fetcher.interrupt(block)
                    block = None
                if not jobs.running and not outbox.pending:
                    break  # prefetched jobs never started: _release_leftovers hands them back
                if time.monotonic() > stop_deadline:
                    break  # grace is over: what still runs is released in run()'s finally
            if block is not None and block.done():
                try:
                    block.result()  # its jobs are started already (block_and_accept)
                    failures = 0
                except _REDIS_ERRORS as exc:
                    failures += 1
                    await self._pause_after_error(exc, failures)
                block = None
            want = self._want()
            if outbox.done and jobs.running and len(outbox.done) < self.concurrency // 2:
                # Jobs are finishing one by one: let the ones about to finish join this
                # batch, so a flush carries more. Async jobs need one pass of the event loop;
                # thread jobs report through call_soon_threadsafe, so give them a moment.
                await asyncio.sleep(0 if self.is_async else COALESCE_S)
                want = self._want()
            if outbox.pending or (want > 0 and not fetcher.idle):
                park_secs = 0.0
                if block is None and want > 0 and fetcher.idle and outbox.done \
                        and not jobs.stopping and fetcher.limit_until <= time.monotonic():
                    # the queue was dry: park with this finish (its BLPOP sent alongside),
                    # so a job added right after it is handed to us, not queued and fetched
                    park_secs = self._park_secs(flushing=True)
                    if park_secs > 0:
                        block = self._block(park_secs, want, fetch=False)
                try:
                    await self._flush(want, park_secs=park_secs)
                    failures = 0
                except _REDIS_ERRORS as exc:
                    failures += 1
                    await self._pause_after_error(exc, failures)
                    continue
                if not fetcher.idle and self._want() > 0:
                    continue  # more room and the queue is not empty: fetch again at once
                want = self._want()
            if jobs.stopping and not jobs.running and not outbox.pending:
                continue  # all finished and flushed: stop now, not at the end of the grace
            # Wait for a finished job, a stop request, new work, or a due time.
            now = time.monotonic()
            timeout: float | None = None
            wait_block = False
            if not jobs.stopping and want > 0 and fetcher.idle:
                if fetcher.limit_until > now:
                    timeout = fetcher.limit_until - now
                else:
                    if block is None and outbox.stats and outbox.stats_due_in() <= 0:
                        # going idle: send the counters now, not with the next job (at most
                        # once per STATS_EVERY_S: a worker that idles between jobs, one
                        # add().result() after another, would pay a script call per job)
                        try:
                            await self._flush(0, stats_now=True)
                        except _REDIS_ERRORS:
                            pass  # kept; sent with a later flush
                    if block is None:
                        secs = self._park_secs()
                        if not secs:
                            fetcher.idle = False
                            continue
                        block = self._block(secs, want)
                    wait_block = True
            elif stop_deadline is not None:
                timeout = max(0.0, stop_deadline - now)
            first = jobs.next_deadline()
            if first is not None:
                first = max(0.0, first - now)
                timeout = first if timeout is None else min(timeout, first)
            if not self.is_async:
                # thread and process mode: the event alone (a finishing block sets it too),
                # no task and no asyncio.wait per pass
                if timeout is None:
                    await wake.wait()
                else:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await within(wake.wait(), timeout)
            else:
                # Async jobs: waiting through a task gives the loop the passes in which the
                # other jobs that are about to finish join this flush. Awaiting the event
                # directly halved the batches (2,007 script calls for 10,000 jobs instead of
                # 1,022; 7.9 commands per job instead of 6.0) for a few calls saved per pass.
                waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(wake.wait())}
                if wait_block:
                    assert block is not None
                    waits.add(block)
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    if w is not block:
                        w.cancel()
            if fetcher.idle and 0 < fetcher.limit_until <= time.monotonic():
                fetcher.idle = False  # the rate-limit window has passed: fetch again
                fetcher.limit_until = 0.0
        if block is not None:
            await fetcher.interrupt(block)

    def _block(self, secs: float, want: int, fetch: bool = True) -> asyncio.Task[None]:
        """Start a park (``Fetcher.block_and_accept``); its end wakes the loop."""
        block = asyncio.ensure_future(self.fetcher.block_and_accept(secs, want, fetch))
        wake = self._wake
        assert wake is not None
        block.add_done_callback(lambda _: wake.set())
        return block

    def _park_secs(self, flushing: bool = False) -> float:
        """How long a park may block: until the next delayed job or the counters are due
        (``Fetcher.block_secs``); 0: too soon to be worth a block. ``flushing``: the park
        goes with a flush, which carries counters that are due (``Outbox.take``)."""
        secs = self.fetcher.block_secs()
        if self.outbox.stats:  # ... and wake up for them when they are due
            due = self.outbox.stats_due_in()
            secs = min(secs, STATS_EVERY_S if flushing and due <= 0 else due)
        return secs if secs > 0.001 else 0.0

    async def _pause_after_error(self, exc: BaseException, failures: int) -> None:
        pause = min(5.0, 0.1 * 2 ** min(failures, 6))
        log.warning("worker %s: Redis error (%s); retrying in %.1fs", self.token, exc, pause)
        await asyncio.sleep(pause)

    async def _flush(self, want: int, stats_now: bool = False, park_secs: float = 0.0) -> None:
        """Send progress and finished jobs, and fetch up to ``want`` new ones, in one trip
        (``park_secs``: and park if none came, see ``Fetcher.finish``)."""
        outbox, fetcher = self.outbox, self.fetcher
        parcel = outbox.take(stats_now)
        done, progress, logs, stats = parcel
        try:
            if progress or logs:
                try:
                    await outbox.send_extras(progress, logs)
                except RedisOutOfMemoryError as exc:
                    # Progress and log lines are what a full Redis refuses; the finished jobs
                    # that follow must still be recorded (finishing frees memory).
                    log.warning("worker %s: %s; dropped %d progress reports and the log lines "
                                "of %d jobs", self.token, exc, len(progress), len(logs))
            if done or stats:
                oks, fetched = await fetcher.finish(done, stats, want, park_secs)
            elif want > 0:
                fetched = await fetcher.fetch(want)
            else:
                return
        except BaseException:
            outbox.restore(parcel)
            raise
        if done:
            outbox.settle(oks, done)
        # the next jobs start first: the calls below are bookkeeping a body need not wait
        # for (a child idles meanwhile in process mode)
        await fetcher.accept(fetched, want)
        if done and outbox.has_dead_letters:
            await outbox.send_dead_letters()
        if fetched.sweep:  # a refused finish freed a job nobody held: back to wait now
            await self.upkeep.sweep_once()
        if fetched.notify:  # jobs depend on the ones just finished: tell them now
            await self.upkeep.resolve_flows()

    async def _release_leftovers(self) -> None:
        """After the grace period: hand jobs still held back to the queue (not an attempt)."""
        await self.fetcher.leave()
        outbox = self.outbox
        outcomes = outbox.done + self.jobs.release_all()
        outbox.done = []
        if outcomes or outbox.stats:
            try:
                _, fetched = await self.fetcher.finish(outcomes, outbox.stats, 0)
                if fetched.notify:
                    await self.upkeep.resolve_flows()
            except Exception as exc:
                log.error("worker %s could not hand back %d jobs at shutdown (%s); the "
                          "stalled check will recover them", self.token, len(outcomes), exc)
