"""The worker engine and the ``Worker`` that runs it in a thread, an event loop or processes.

One engine (an asyncio loop) does all the Redis work of a worker: it fetches jobs in
batches, finishes them in batches (the finish call also fetches the next jobs), renews
locks, and sweeps stalled jobs. Sync processors run on a thread pool, async ones on the
loop. ``mode="thread"`` runs the engine on a background thread, ``mode="asyncio"`` on
the caller's running loop, ``mode="process"`` in N child processes.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import math
import os
import queue as queue_mod
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import redis

from . import stats as stats_mod
from .backoff import BackoffStrategy
from .connection import Connection, connect
from .durations import to_ms
from .errors import (
    InvalidOptionError,
    JobTimeoutError,
    NbqueueError,
    RedisUnavailableError,
    UnrecoverableError,
)
from .job import JobBase
from .keys import DEFAULT_PREFIX, validate_queue_name
from .ops import Outcome, QueueOps, dead_letter_entry
from .protocol import Call, Op, run_async, single
from .records import Fetched, JobRecord
from .serialization import dumps

log = logging.getLogger("nbqueue.worker")

DEAD_LETTER = "dead_letter"
MODES = ("thread", "asyncio", "process")
MAX_BLOCK_S = 5.0  # an idle worker re-checks at least this often (delayed jobs, stop)
COALESCE_S = 0.0005  # a busy thread-mode worker gathers finished jobs this long before a flush
STATS_EVERY_S = 1.0  # duration/error counters reach Redis at most this often (or when idle)

Processor = Callable[[Any], Any]


def _is_async(fn: Any) -> bool:
    # a callable object whose __call__ is a coroutine function counts too
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(type(fn), "__call__", None))  # noqa: B004


def classify(job: JobRecord, result: Any = None, error: BaseException | None = None,
             backoff_strategy: BackoffStrategy | None = None,
             job_handle: Any = None) -> Outcome:
    """Turn how an attempt ended into an outcome (the retry rules live here)."""
    if error is None:
        if isinstance(result, Mapping) and result.get("success") is False:
            # The seed's "mark as failed": a structured failure, never retried.
            reason = str(result.get("error") or "processor returned success=False")
            return Outcome(job, "f", reason, "returned_failure")
        try:
            return Outcome(job, "c", dumps(result, "the processor's return value",
                                           strict=False))
        except Exception as exc:  # not JSON (or too deep, or circular): the job fails
            return Outcome(job, "f", f"{type(exc).__name__}: {exc}", type(exc).__name__)
    if isinstance(error, UnrecoverableError):
        return Outcome(job, "f", str(error) or "unrecoverable error", "unrecoverable")
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
        return Outcome(job, "r", reason, etype, delay)
    return Outcome(job, "x", reason, etype)


class _JobThreads:
    """The threads that run sync processors: a minimal pool of *daemon* threads.

    ``ThreadPoolExecutor`` threads are joined at interpreter exit, so a job abandoned after
    the grace period (already handed back to the queue) kept a stopped worker process alive
    until its body returned, and ran on while another worker re-ran it. Daemon threads let
    the process exit; the abandoned body dies with it, exactly like a killed worker.
    ``size`` grows by one for each thread left running a timed-out job, so the worker keeps
    its concurrency.
    """

    def __init__(self, size: int, prefix: str) -> None:
        self.size, self._prefix = size, prefix
        self._work: queue_mod.SimpleQueue[Callable[[], None] | None] = queue_mod.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)

    def submit(self, fn: Callable[[], None]) -> None:
        self._work.put(fn)
        if not self._idle.acquire(blocking=False) and len(self._threads) < self.size:
            t = threading.Thread(target=self._run, daemon=True,
                                 name=f"{self._prefix}_{len(self._threads)}")
            t.start()
            self._threads.append(t)

    def _run(self) -> None:
        while True:
            fn = self._work.get()
            if fn is None:
                return
            fn()
            del fn
            self._idle.release()

    def shutdown(self) -> None:
        while True:  # drop what has not started
            try:
                self._work.get_nowait()
            except queue_mod.Empty:
                break
        for _ in self._threads:
            self._work.put(None)


class Engine:
    """The loop of one worker (see the module docstring). Not thread-safe except where said."""

    def __init__(self, queue_name: str, processor: Processor, connection: Connection, *,
                 prefix: str = DEFAULT_PREFIX, concurrency: int = 1,
                 lock_duration: int = 30_000, stalled_interval: int = 30_000,
                 max_stalled_count: int = 1, backoff_strategy: BackoffStrategy | None = None,
                 dead_letter: bool = True, grace: float = 30.0, prefetch: int = 0,
                 worker_name: str | None = None) -> None:
        self.queue_name = queue_name
        self.processor = processor
        self.connection = connection
        self.prefix = prefix
        self.concurrency = concurrency
        self.lock_ms = lock_duration
        self.stalled_ms = stalled_interval
        self.max_stalled = max_stalled_count
        self.backoff_strategy = backoff_strategy
        self.dead_letter = dead_letter and queue_name != DEAD_LETTER
        self.grace = grace
        self.prefetch = prefetch
        self.token = worker_name or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.ops = QueueOps(queue_name, prefix=prefix)
        # BLPOP on the shared marker and on a key of our own, so stop() can wake us.
        self._wake_key = f"{self.ops.keys.base}wake:{self.token}"
        self.is_async = _is_async(processor)
        self.processed = 0
        self.failed = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        # job id -> (record, its task; None for a sync processor running on a thread)
        self._running: dict[str, tuple[JobRecord, asyncio.Task[None] | None]] = {}
        # Prefetched jobs (locked for us, not started yet): a slot that frees up starts the
        # next one at once instead of waiting for the finish/fetch round trip.
        self._ready: collections.deque[JobRecord] = collections.deque()
        self._done: list[Outcome] = []
        self._progress: dict[str, Any] = {}
        self._stats: Counter[str] = Counter()
        self._lost: set[str] = set()
        self._deadlines: dict[str, float] = {}  # sync jobs with a timeout: monotonic deadline
        # Sync jobs finished on their threads, handed to the loop in batches (one wake-up).
        self._finished: collections.deque[tuple[JobRecord, Outcome, float]] = \
            collections.deque()
        self._drain_scheduled = False
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._idle = False  # the last fetch emptied the queue: block before asking again
        self._next_delay = -1
        self._limit_until = 0.0
        # Parked: registered as idle for producers to hand us jobs (ops.block_and_fetch), but
        # not blocked any more; the next fetch/finish unparks (and takes such a job).
        self._parked = False
        self._parks = 0  # block-and-fetch calls made: tells whether one ran during a flush
        self._stats_sent = 0.0
        self._pool: _JobThreads | None = None
        self._queue: Any = None  # the Queue whose Job handles processors receive
        # -- recurring jobs: queue the next tick of fetched scheduled jobs (nbqueue.scheduler)
        from .scheduler import TickFollower

        self._ticks = TickFollower(self.ops)

    # -- thread-safe entry points -------------------------------------------------------
    def request_stop(self, grace: float | None = None) -> None:
        """Ask the loop to finish its active jobs and return (callable from any thread).

        Jobs still running after ``grace`` seconds go back to the queue."""
        if grace is not None:
            self.grace = grace
        self._stopping = True
        if self.loop is not None and self._wake is not None:
            try:
                self.loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass  # the loop is already closed

    def report_progress(self, job: JobBase, value: Any) -> None:
        """Called by ``job.update_progress`` from a processor (any thread)."""
        def put() -> None:
            self._progress[job.id] = value
            assert self._wake is not None
            self._wake.set()

        if self.loop is None:
            return
        if threading.current_thread() is getattr(self, "_loop_thread", None):
            put()
        else:
            self.loop.call_soon_threadsafe(put)

    def describe(self) -> str:
        """A one-line state dump, for logs when a stop takes longer than it should."""
        return (f"engine {self.token} of {self.queue_name!r}: stopping={self._stopping} "
                f"running={sorted(self._running)} ready={[r.id for r in self._ready]} "
                f"done={[o.job.id for o in self._done]} progress={sorted(self._progress)}")

    # -- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        self._wake = asyncio.Event()
        self._client = self.connection.new_async()
        if not self.is_async:
            self._pool = _JobThreads(self.concurrency, "nbqueue-job")
        self._queue = self._make_queue()
        helpers = [asyncio.create_task(self._renew_locks()),
                   asyncio.create_task(self._sweep_stalled())]
        try:
            await self._main()
        finally:
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._release_leftovers()
            if self._pool is not None:
                self._pool.shutdown()
            await self._client.aclose()

    def _make_queue(self) -> Any:
        if self.is_async:
            from .aio import Queue as AsyncQueue

            return AsyncQueue(self.queue_name, self.connection, prefix=self.prefix)
        from .queue import Queue

        return Queue(self.queue_name, self.connection, prefix=self.prefix)

    async def _call(self, op: Op[Any]) -> Any:
        return await run_async(self._client, op)

    def _want(self) -> int:
        if self._stopping:
            return 0
        return self.concurrency + self.prefetch - len(self._running) - len(self._ready)

    async def _main(self) -> None:
        assert self._wake is not None
        # An idle worker's BLPOP on the marker is pipelined with a fetch: when a job arrives
        # Redis runs the fetch right away, saving a round trip of latency.
        block: asyncio.Task[None] | None = None
        failures = 0
        stop_deadline: float | None = None
        while True:
            # Cleared before looking at the state it guards, so no wake-up is lost.
            self._wake.clear()
            self._expire_deadlines()
            if self._stopping:
                if stop_deadline is None:
                    stop_deadline = time.monotonic() + self.grace
                if block is not None:
                    await self._interrupt(block)
                    block = None
                if not self._running and not self._done and not self._progress:
                    break  # prefetched jobs never started: _release_leftovers hands them back
                if time.monotonic() > stop_deadline:
                    break  # grace is over: what still runs is released in run()'s finally
            if block is not None and block.done():
                try:
                    block.result()  # its jobs are started already (_block_and_accept)
                    failures = 0
                except (RedisUnavailableError, redis.RedisError, OSError) as exc:
                    failures += 1
                    await self._pause_after_error(exc, failures)
                block = None
            want = self._want()
            if self._done and self._running and len(self._done) < self.concurrency // 2:
                # Jobs are finishing one by one: let the ones about to finish join this
                # batch, so a flush carries more. Async jobs need one pass of the event loop;
                # thread jobs report through call_soon_threadsafe, so give them a moment.
                await asyncio.sleep(0 if self.is_async else COALESCE_S)
                want = self._want()
            if self._done or self._progress or (want > 0 and not self._idle):
                try:
                    await self._flush(want)
                    failures = 0
                except (RedisUnavailableError, redis.RedisError, OSError) as exc:
                    failures += 1
                    await self._pause_after_error(exc, failures)
                    continue
                if not self._idle and self._want() > 0:
                    continue  # more room and the queue is not empty: fetch again at once
                want = self._want()
            if self._stopping and not self._running and not self._done and not self._progress:
                continue  # all finished and flushed: stop now, not at the end of the grace
            # Wait for a finished job, a stop request, new work, or a due time.
            waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._wake.wait())}
            now = time.monotonic()
            timeout: float | None = None
            if not self._stopping and want > 0 and self._idle:
                if self._limit_until > now:
                    timeout = self._limit_until - now
                else:
                    if block is None and self._stats:
                        # going idle: send the counters now, not with the next job
                        try:
                            await self._flush(0, stats_now=True)
                        except (RedisUnavailableError, redis.RedisError, OSError):
                            pass  # kept; sent with a later flush
                    if block is None:
                        secs = MAX_BLOCK_S if self._next_delay < 0 else min(
                            MAX_BLOCK_S, self._next_delay / 1000)
                        if secs <= 0.001:
                            self._idle = False
                            waits.pop().cancel()
                            continue
                        block = asyncio.ensure_future(self._block_and_accept(secs, want))
                    waits.add(block)
            elif stop_deadline is not None:
                timeout = max(0.0, stop_deadline - now)
            if self._deadlines:
                first = min(self._deadlines.values()) - now
                timeout = max(0.0, first) if timeout is None else min(timeout, max(0.0, first))
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                if w is not block:
                    w.cancel()
            if self._idle and 0 < self._limit_until <= time.monotonic():
                self._idle = False  # the rate-limit window has passed: fetch again
                self._limit_until = 0.0
        if block is not None:
            await self._interrupt(block)

    async def _pause_after_error(self, exc: BaseException, failures: int) -> None:
        pause = min(5.0, 0.1 * 2 ** min(failures, 6))
        log.warning("worker %s: Redis error (%s); retrying in %.1fs", self.token, exc, pause)
        await asyncio.sleep(pause)

    async def _block_and_accept(self, secs: float, want: int) -> None:
        """Wait for work (pipelined BLPOP + fetch) and start what it brings at once: taking
        the jobs here, in the task that read the reply, saves the main loop's wake-up."""
        self._parked = False  # this call's fetch registers us, or not, afresh
        self._parks += 1
        fetched, parked = await self._call(self.ops.block_and_fetch(
            self._wake_key, secs, want, self.token, self.lock_ms))
        self._parked = parked
        await self._accept(fetched, want)
        if self._running:
            # Jobs that end a wait go first: before this loop goes on with its bookkeeping
            # (the next fetch...), async jobs take their first step, and job threads get the
            # GIL (a woken thread otherwise waits until the loop blocks: ~0.2 ms measured).
            if self.is_async:
                await asyncio.sleep(0)
            else:
                time.sleep(0)

    async def _interrupt(self, block: asyncio.Task[None]) -> None:
        """End a pending block-and-fetch at once (stop): wake our own BLPOP, keep its jobs
        (they are ready, not started: the loop is stopping; leftovers are handed back)."""
        if not block.done():
            try:
                await self._call(single(Call.cmd("RPUSH", self._wake_key, "stop")))
                await asyncio.wait_for(asyncio.shield(block), MAX_BLOCK_S + 5)
            except Exception:
                block.cancel()  # jobs it may have locked are recovered by the stalled sweep
        try:
            block.result()
        except BaseException:
            pass
        try:
            await self._call(single(Call.cmd("DEL", self._wake_key)))
        except Exception:
            pass

    async def _flush(self, want: int, stats_now: bool = False) -> None:
        """Send progress and finished jobs, and fetch up to ``want`` new ones, in one trip.

        Duration and error-type counters ride along at most once a second (or when asked):
        they are a few commands each, and a steady drain has many small batches."""
        done, self._done = self._done, []
        progress, self._progress = self._progress, {}
        now = time.monotonic()
        stats: Counter[str] = Counter()
        if self._stats and (stats_now or now - self._stats_sent >= STATS_EVERY_S):
            stats, self._stats = self._stats, Counter()
            self._stats_sent = now
        try:
            for job_id, value in progress.items():
                await self._call(self.ops.update_progress(job_id, value))
            if done or stats:
                unpark, parks = self._parked, self._parks
                oks, fetched = await self._call(self.ops.finish(
                    done, stats, want, self.token, self.lock_ms, unpark))
                self._unparked(unpark, parks)
                for ok, outcome in zip(oks, done):
                    if not ok:
                        log.warning("job %s of %s finished after its lock was lost (stalled "
                                    "and re-queued, or removed); its outcome was dropped",
                                    outcome.job.id, self.queue_name)
                    elif outcome.terminal_failure:
                        await self._dead_letter(outcome.job, outcome.value, outcome.error_type)
            elif want > 0:
                unpark, parks = self._parked, self._parks
                fetched = await self._call(self.ops.fetch(want, self.token, self.lock_ms,
                                                          unpark))
                self._unparked(unpark, parks)
            else:
                return
        except BaseException:
            # Nothing was lost: put back what we could not send (the scripts are idempotent
            # for a given lock, so re-sending a batch that did land is rejected, not doubled).
            self._done = done + self._done
            for k, v in progress.items():
                self._progress.setdefault(k, v)
            self._stats.update(stats)
            raise
        await self._accept(fetched, want)

    async def _accept(self, fetched: Fetched, want: int) -> None:
        """Take what a fetch returned: start jobs (or keep them ready), note the queue state."""
        for corrupt in fetched.corrupt:
            record = JobRecord(id=corrupt.job_id, name="", data={},
                               opts=self.ops.defaults, lock=corrupt.lock)
            self._done.append(Outcome(record, "f", corrupt.reason, "corrupt"))
        if fetched.jobs:
            await self._ticks.follow(self._call, fetched.jobs)  # recurring: the next tick
        for record in fetched.jobs:
            if len(self._running) < self.concurrency and not self._stopping:
                self._start(record)
            else:
                self._ready.append(record)
        if want > 0:
            # Fewer than asked: the queue is empty (or paused, or rate-limited) for now.
            self._idle = len(fetched.jobs) + len(fetched.corrupt) < want
            if self._idle:
                self._next_delay = fetched.next_delay_ms
                if fetched.limit_ttl_ms > 0:
                    self._limit_until = time.monotonic() + fetched.limit_ttl_ms / 1000

    def _start(self, record: JobRecord) -> None:
        job = self._queue.job_class(self._queue, record, sink=self)
        if self.is_async:
            task = asyncio.ensure_future(self._process(record, job))
            self._running[record.id] = (record, task)
            return
        assert self._pool is not None
        self._running[record.id] = (record, None)
        if record.opts.timeout:
            self._deadlines[record.id] = time.monotonic() + record.opts.timeout / 1000
        self._pool.submit(functools.partial(self._run_sync, record, job))

    def _run_sync(self, record: JobRecord, job: JobBase) -> None:
        """On a job thread: run a sync processor, classify, hand the outcome to the loop."""
        started = time.monotonic()
        result: Any = None
        error: BaseException | None = None
        try:
            result = self.processor(job)
            if inspect.isawaitable(result):  # a sync function that returned a coroutine
                assert self.loop is not None
                result = asyncio.run_coroutine_threadsafe(_awaited(result), self.loop).result()
        except BaseException as exc:  # the processor's failure is the job's, not ours
            error = exc
        outcome = _safe_classify(record, result, error, self.backoff_strategy, job)
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
            entry = self._running.get(record.id)
            if entry is None or entry[0] is not record:
                continue  # timed out or handed back meanwhile: this result is void
            self._complete(record, outcome, duration)

    def _expire_deadlines(self) -> None:
        """Fail sync jobs past their timeout (their threads cannot be stopped; see README)."""
        if not self._deadlines:
            return
        now = time.monotonic()
        for job_id, deadline in list(self._deadlines.items()):
            if now < deadline:
                continue
            record = self._running[job_id][0]
            error = JobTimeoutError(f"job exceeded its timeout of {record.opts.timeout} ms")
            if self._pool is not None:
                self._pool.size += 1  # the stuck thread runs on; keep our concurrency
            self._complete(record, classify(record, None, error, self.backoff_strategy),
                           (record.opts.timeout or 0) / 1000)

    async def _process(self, record: JobRecord, job: JobBase) -> None:
        started = time.monotonic()
        timeout = record.opts.timeout / 1000 if record.opts.timeout else None
        result: Any = None
        error: BaseException | None = None
        try:
            work = self.processor(job)
            if timeout is None:
                result = await work
            else:
                try:
                    result = await asyncio.wait_for(work, timeout)
                except asyncio.TimeoutError:
                    raise JobTimeoutError(
                        f"job exceeded its timeout of {record.opts.timeout} ms") from None
        except asyncio.CancelledError:
            self._running.pop(record.id, None)
            raise
        except BaseException as exc:  # the processor's failure is the job's, not ours
            error = exc
        self._complete(record, _safe_classify(record, result, error, self.backoff_strategy,
                                              job), time.monotonic() - started)

    def _complete(self, record: JobRecord, outcome: Outcome, duration: float) -> None:
        """Book a finished attempt; it is sent with the next flush."""
        stats_mod.record(self._stats, duration,
                         outcome.error_type if outcome.kind != "c" else None)
        if outcome.kind == "c":
            self.processed += 1
        elif outcome.terminal_failure:
            self.failed += 1
        self._lost.discard(record.id)
        self._deadlines.pop(record.id, None)
        self._done.append(outcome)
        self._running.pop(record.id, None)
        if self._ready and not self._stopping:
            self._start(self._ready.popleft())
        assert self._wake is not None
        self._wake.set()

    async def _dead_letter(self, record: JobRecord, reason: str, error_type: str) -> None:
        if not self.dead_letter:
            return
        data, opts = dead_letter_entry(self.queue_name, record, reason, error_type)
        dlq = QueueOps(DEAD_LETTER, prefix=self.prefix)
        try:
            await self._call(dlq.add(data, opts))
        except Exception as exc:  # the job itself is safely in `failed` already
            log.error("could not record job %s in the dead-letter queue: %s", record.id, exc)

    async def _renew_locks(self) -> None:
        while True:
            await asyncio.sleep(self.lock_ms / 2000)
            held = [rec for rec, _ in self._running.values()] + list(self._ready)
            locks = {rec.id: rec.lock for rec in held if rec.lock}
            if not locks:
                continue
            try:
                lost = await self._call(self.ops.extend_locks(locks, self.lock_ms))
            except Exception as exc:
                log.warning("worker %s could not renew locks: %s", self.token, exc)
                continue
            for jid in lost:
                log.warning("worker %s lost the lock of job %s", self.token, jid)
                self._lost.add(jid)

    async def _sweep_stalled(self) -> None:
        while True:
            try:
                _, failed = await self._call(
                    self.ops.check_stalled(self.max_stalled, self.stalled_ms))
                if failed and self.dead_letter:
                    records = await self._call(self.ops.get_jobs_by_id(failed))
                    for rec in records:
                        if rec is not None:
                            rec.attempts_made -= 1  # dead_letter_entry counts this attempt
                            await self._dead_letter(rec, rec.failed_reason or "stalled",
                                                    "stalled")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stalled-job check failed: %s", exc)
            await asyncio.sleep(self.stalled_ms / 1000)

    def _unparked(self, unpark: bool, parks: int) -> None:
        # a block-and-fetch that ran meanwhile decided afresh: its word stands
        if unpark and parks == self._parks:
            self._parked = False

    async def _release_leftovers(self) -> None:
        """After the grace period: hand jobs still running back to the queue (not an attempt)."""
        if self._parked:  # leave the idle registry; a job handed to us meanwhile goes back too
            try:
                fetched = await self._call(self.ops.fetch(0, self.token, self.lock_ms, True))
                self._parked = False
                self._ready.extend(fetched.jobs)
            except Exception as exc:
                log.warning("worker %s could not leave the idle registry (%s); it expires "
                            "by itself", self.token, exc)
        outcomes = []
        for record, task in list(self._running.values()):
            if task is not None:
                task.cancel()
            outcomes.append(Outcome(record, "r", "released at worker shutdown", "shutdown",
                                    attempts_made=record.attempts_made))
        for record in self._ready:
            outcomes.append(Outcome(record, "r", "released at worker shutdown", "shutdown",
                                    attempts_made=record.attempts_made))
        self._running.clear()
        self._ready.clear()
        self._deadlines.clear()
        outcomes = self._done + outcomes
        self._done = []
        if outcomes or self._stats:
            try:
                await self._call(self.ops.finish(outcomes, self._stats, 0, self.token,
                                                 self.lock_ms))
            except Exception as exc:
                log.error("worker %s could not hand back %d jobs at shutdown (%s); the "
                          "stalled check will recover them", self.token, len(outcomes), exc)


def _safe_classify(record: JobRecord, result: Any, error: BaseException | None,
                   strategy: BackoffStrategy | None, job: Any) -> Outcome:
    """``classify`` that cannot raise: a hostile exception (one whose ``str()`` raises, say)
    must fail its job, not kill the thread or task that ran it."""
    try:
        return classify(record, result, error, strategy, job)
    except Exception as exc:
        return Outcome(record, "f", f"could not record the outcome: {type(exc).__name__}",
                       type(exc).__name__)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


# -- running an engine ----------------------------------------------------------------------
def _child_main(payload: bytes) -> None:
    """Entry point of a process-mode child: unpickle the processor, run one engine."""
    import cloudpickle

    logging.basicConfig(level=os.environ.get("NBQUEUE_LOG_LEVEL", "WARNING"))
    spec = cloudpickle.loads(payload)
    conn = Connection(spec.pop("url"), cluster=spec.pop("cluster"))
    engine = Engine(spec.pop("queue_name"), spec.pop("processor"), conn, **spec)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, engine.request_stop)
        await engine.run()

    asyncio.run(main())


class Worker:
    """Processes the jobs of one queue with ``processor(job)`` (sync or async).

    ``start()`` returns at once (thread/asyncio/process modes); ``run()`` blocks until
    ``stop()`` or a signal; ``stop()`` is graceful: active jobs finish within ``grace``
    seconds, whatever still runs then goes back to the queue.

    ``prefetch`` (default 0) lets the worker hold that many extra jobs locked and ready, so
    a slot that frees up starts the next job without a round trip; it trades strict
    priority (a new CRITICAL job waits behind the prefetched ones) for throughput.
    """

    def __init__(self, queue_name: str, processor: Processor | None,
                 connection: Connection | str | None = None, *, concurrency: int = 1,
                 mode: str = "thread", prefix: str = DEFAULT_PREFIX,
                 lock_duration: Any = 30_000, stalled_interval: Any = 30_000,
                 max_stalled_count: int = 1, backoff_strategy: BackoffStrategy | None = None,
                 dead_letter: bool = True, grace: float = 30.0, processes: int | None = None,
                 name: str | None = None, allow_code: bool = False,
                 secret: str | bytes | None = None, prefetch: int = 0) -> None:
        queue_name = validate_queue_name(queue_name)
        if allow_code:
            # Code jobs (%%enqueue --run) are opt-in and must carry a valid HMAC signature.
            from .codejobs import wrap_processor

            processor = wrap_processor(processor, secret)
        if not callable(processor):
            raise TypeError(f"processor must be callable, not {type(processor).__name__}")
        if mode not in MODES:
            raise InvalidOptionError(f"mode must be one of {', '.join(MODES)}: {mode!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidOptionError(f"concurrency must be an int >= 1: {concurrency!r}")
        if isinstance(max_stalled_count, bool) or not isinstance(max_stalled_count, int) \
                or max_stalled_count < 0:
            raise InvalidOptionError(f"max_stalled_count must be an int >= 0: "
                                     f"{max_stalled_count!r}")
        self.queue_name = queue_name
        self.processor = processor
        self._connection_arg = connection
        self.concurrency = concurrency
        self.mode = mode
        self.processes = processes or min(concurrency, os.cpu_count() or 1)
        self.name = name
        self._engine_kwargs: dict[str, Any] = dict(
            prefix=prefix, lock_duration=to_ms(lock_duration, "lock_duration", allow_zero=False),
            stalled_interval=to_ms(stalled_interval, "stalled_interval", allow_zero=False),
            max_stalled_count=max_stalled_count, backoff_strategy=backoff_strategy,
            dead_letter=dead_letter, grace=grace, prefetch=prefetch)
        self.engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._children: list[Any] = []
        self._error: BaseException | None = None

    @property
    def connection(self) -> Connection:
        if not isinstance(self._connection_arg, Connection):
            self._connection_arg = connect(self._connection_arg)
        return self._connection_arg

    def _new_engine(self, concurrency: int) -> Engine:
        return Engine(self.queue_name, self.processor, self.connection,
                      concurrency=concurrency, worker_name=self.name, **self._engine_kwargs)

    @property
    def is_running(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        if self._task is not None:
            return not self._task.done()
        return any(p.is_alive() for p in self._children)

    @property
    def processed(self) -> int:
        return self.engine.processed if self.engine else 0

    def start(self) -> Worker:
        """Start in the background and return at once."""
        if self.is_running:
            return self
        _ = self.connection  # resolve (and check) the connection in the caller's thread
        if self.mode == "process":
            self._start_processes()
        elif self.mode == "asyncio" and _running_loop() is not None:
            self.engine = self._new_engine(self.concurrency)
            self._task = asyncio.ensure_future(self.engine.run())
        else:
            self.engine = self._new_engine(self.concurrency)
            ready = threading.Event()
            self._thread = threading.Thread(target=self._thread_main, args=(ready,),
                                            name=f"nbqueue-worker-{self.queue_name}",
                                            daemon=True)
            self._thread.start()
            ready.wait(5)
        return self

    def _thread_main(self, ready: threading.Event) -> None:
        assert self.engine is not None
        engine = self.engine

        async def main() -> None:
            task = asyncio.ensure_future(engine.run())
            await asyncio.sleep(0)
            ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by stop() and logged here
            self._error = exc
            log.exception("worker for %s died", self.queue_name)
        finally:
            ready.set()

    def _start_processes(self) -> None:
        import multiprocessing

        import cloudpickle

        per_child = math.ceil(self.concurrency / self.processes)
        ctx = multiprocessing.get_context("spawn")
        for i in range(self.processes):
            spec = dict(self._engine_kwargs, url=self.connection.url,
                        cluster=self.connection.cluster, queue_name=self.queue_name,
                        processor=self.processor, concurrency=per_child,
                        worker_name=f"{self.name}-{i}" if self.name else None)
            # The processor goes to the child directly (pickled by value), never via Redis.
            payload = cloudpickle.dumps(spec)
            proc = ctx.Process(target=_child_main, args=(payload,), daemon=True,
                               name=f"nbqueue-worker-{self.queue_name}-{i}")
            proc.start()
            self._children.append(proc)

    def run(self) -> None:
        """Run in the foreground until ``stop()``, SIGINT or SIGTERM (the CLI uses this)."""
        if self.mode == "process":
            self._start_processes()
            try:
                for p in self._children:
                    p.join()
            except KeyboardInterrupt:
                pass
            finally:
                self.stop()
            return
        self.engine = self._new_engine(self.concurrency)
        engine = self.engine

        async def main() -> None:
            loop = asyncio.get_running_loop()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, engine.request_stop)
            await engine.run()

        asyncio.run(main())

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: finish active jobs (hand back what outlives the grace period)."""
        wait = (timeout if timeout is not None else self._engine_kwargs["grace"]) + 10
        if self.engine is not None:
            self.engine.request_stop(timeout)
        if self._thread is not None:
            self._thread.join(wait)
            if self._thread.is_alive() and self.engine is not None:
                log.error("worker did not stop within %.0fs: %s", wait, self.engine.describe())
            self._thread = None
        for p in self._children:
            if p.is_alive() and p.pid:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self._children:
            p.join(wait)
            if p.is_alive():
                p.kill()
                p.join(5)
        self._children = []
        if self._error is not None:
            err, self._error = self._error, None
            raise NbqueueError(f"the worker of {self.queue_name!r} had died: {err}") from err

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return (f"<Worker {self.queue_name!r} mode={self.mode} "
                f"concurrency={self.concurrency} {state}>")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
