"""Fetching and parking: how jobs reach a worker.

A busy worker fetches with its flush (``finish.lua`` returns the next jobs). An idle one
*parks*: one pipeline runs a fetch that, finding nothing, registers the worker as idle, and
a BLPOP on its own hand-off list, the queue's marker and its wake key. A producer adding a
job due now to an empty queue locks it for a parked worker and pushes it onto that list
(``add.lua``), so no fetch runs between add and start. The next fetch or finish unparks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ..errors import RedisUnavailableError
from ..ops import QueueOps
from ..protocol import DeadConnectionError, Op, run_async
from ..records import Fetched, JobRecord, Outcome, OutcomeKind
from ..scheduler import TickFollower
from .execution import Execution
from .outbox import Outbox

log = logging.getLogger("nbqueue.worker")

T = TypeVar("T")
MAX_BLOCK_S = 5.0  # an idle worker re-checks at least this often (delayed jobs, stop)


class Fetcher:
    """Fetches (alone or with a finish), parks when idle, and hands jobs to execution."""

    def __init__(self, ops: QueueOps, token: str, lock_ms: int, jobs: Execution,
                 outbox: Outbox) -> None:
        self.ops = ops
        self.token = token
        self.lock_ms = lock_ms
        self.jobs = jobs
        self.outbox = outbox
        # BLPOP on the shared marker and on a key of our own, so a stop can wake us.
        self.wake_key = ops.keys.wake(token)
        self.client: Any = None
        self.idle = False  # the last fetch emptied the queue: block before asking again
        self.next_delay = -1  # ms until the next delayed job is due (-1: none)
        self.limit_until = 0.0  # monotonic end of the rate-limit window (0: none)
        # Parked: registered as idle for producers to hand us jobs (ops.block_and_fetch), but
        # not blocked any more; the next fetch/finish unparks (and takes such a job).
        self.parked = False
        self.parks = 0  # block-and-fetch calls made: tells whether one ran during a flush
        self._ticks = TickFollower(ops)  # recurring jobs: queue the next tick

    # -- the round trips -------------------------------------------------------------------
    async def fetch(self, want: int) -> Fetched:
        unpark, parks = self.parked, self.parks
        t0 = time.monotonic()
        fetched = await self._run(self.ops.fetch(want, self.token, self.lock_ms, unpark))
        self._unparked(unpark, parks)
        self.jobs.prefetch.fetched(want, len(fetched.jobs), time.monotonic() - t0)
        return fetched

    async def finish(self, done: Sequence[Outcome], stats: Mapping[str, float],
                     want: int, park_secs: float = 0.0) -> tuple[list[bool], Fetched]:
        """Send finished jobs (and counters) and fetch up to ``want`` new ones: one call.
        ``park_secs`` > 0: register as idle if nothing came, for the BLPOP of a
        ``block_and_accept(fetch=False)`` started with it."""
        unpark, parks = self.parked, self.parks
        t0 = time.monotonic()
        oks, fetched = await self._run(self.ops.finish(
            done, stats, want, self.token, self.lock_ms, unpark,
            max(1, round(park_secs * 1000)) if park_secs > 0 else 0), [o.job.id for o in done])
        self._unparked(unpark, parks)
        self.jobs.prefetch.fetched(want, len(fetched.jobs), time.monotonic() - t0)
        return oks, fetched

    def _unparked(self, unpark: bool, parks: int) -> None:
        # a block-and-fetch that ran meanwhile decided afresh: its word stands
        if unpark and parks == self.parks:
            self.parked = False

    async def accept(self, fetched: Fetched, want: int) -> None:
        """Take what a fetch returned: start jobs (or keep them ready), note the queue state."""
        for corrupt in fetched.corrupt:
            record = JobRecord(id=corrupt.job_id, name="", data={},
                               opts=self.ops.defaults, lock=corrupt.lock)
            self.outbox.done.append(
                Outcome(record, OutcomeKind.FAILED, corrupt.reason, "corrupt"))
        jobs = fetched.jobs
        if jobs:
            await self._ticks.follow(self.run, jobs)
            take = self.jobs.take
            for record in jobs:
                take(record)
        if want > 0:
            # Fewer than asked: the queue is empty (or paused, or rate-limited) for now.
            self.idle = len(jobs) + len(fetched.corrupt) < want
            if self.idle:
                self.next_delay = fetched.next_delay_ms
                if fetched.limit_ttl_ms > 0:
                    self.limit_until = time.monotonic() + fetched.limit_ttl_ms / 1000

    async def run(self, op: Op[T]) -> T:
        """Run ``op`` on the engine's client (tests drive the ops with a fake executor)."""
        return await run_async(self.client, op)

    # -- parking ---------------------------------------------------------------------------
    def block_secs(self) -> float:
        """How long an idle wait may last: until the next delayed job, at most MAX_BLOCK_S."""
        return MAX_BLOCK_S if self.next_delay < 0 else min(MAX_BLOCK_S, self.next_delay / 1000)

    async def block_and_accept(self, secs: float, want: int, fetch: bool = True) -> None:
        """Wait for work (pipelined BLPOP + fetch) and start what it brings at once: taking
        the jobs here, in the task that read the reply, saves the main loop's wake-up.
        ``fetch=False``: the BLPOP alone, the registration being made by the finish sent
        with it (``finish(park_secs=)``): a worker going idle after its jobs is parked by
        the time its finish has run, with no fetch script and no turn of the loop between."""
        self.parked = False  # this call's fetch (or finish) registers us, or not, afresh
        self.parks += 1
        try:
            fetched, parked = await self._run(
                self.ops.block_and_fetch(self.wake_key, secs, want, self.token, self.lock_ms)
                if fetch else self.ops.block(self.wake_key, secs, self.token))
        except BaseException:
            # failed or cancelled: its fetch may have registered us, so the next fetch (or
            # the shutdown's leave) must unpark
            self.parked = True
            raise
        self.parked = parked
        await self.accept(fetched, want)
        if not parked:
            self.idle = True  # a job is handed over only when none waits: the queue is dry
        if self.jobs.running:
            # Jobs that end a wait go first: before the loop goes on with its bookkeeping
            # (the next fetch...), async jobs take their first step, and job threads get the
            # GIL (a woken thread otherwise waits until the loop blocks: ~0.2 ms measured).
            if self.jobs.is_async:
                await asyncio.sleep(0)
            else:
                time.sleep(0)

    async def _run(self, op: Any, finishing: Sequence[str] = ()) -> Any:
        """``run_async``; after a dead connection (no reply in time: half-open), the jobs a
        lost reply locked for us go back to wait at once (``_reclaim``); ``finishing``: the
        jobs whose outcome this call carried (ours still: the finish is sent again)."""
        try:
            return await self.run(op)
        except RedisUnavailableError as exc:
            if isinstance(exc.__cause__, DeadConnectionError):
                await self._reclaim(finishing)
            raise

    async def _reclaim(self, finishing: Sequence[str] = ()) -> None:
        """Jobs locked for us by a reply the dead connection swallowed: back to wait now
        (the ones we hold, run or finish are kept)."""
        held = [*self.jobs.held_locks(), *finishing, *(o.job.id for o in self.outbox.done)]
        try:
            back = await self.run(self.ops.reclaim(self.token, held))
        except Exception as exc:
            log.warning("worker %s: could not give back jobs of a lost reply (%s); the "
                        "stalled check will", self.token, exc)
            return
        if back:
            log.warning("worker %s: gave back %d job(s) locked by a reply lost with the dead "
                        "connection: %s", self.token, len(back), ", ".join(back))

    async def interrupt(self, block: asyncio.Task[None]) -> None:
        """End a pending block-and-fetch at once (stop): leave the idle registry and wake
        our own BLPOP in one call (leave.lua), keep the jobs either brings (they are ready,
        not started: the loop is stopping; leftovers are handed back)."""
        if not block.done():
            try:
                await self._leave(blocked=True)
                await asyncio.wait_for(asyncio.shield(block), MAX_BLOCK_S + 5)
            except Exception:
                block.cancel()  # jobs it may have locked are recovered by the stalled sweep
        try:
            block.result()
        except BaseException:
            pass
        try:
            await self.run(self.ops.clear_wake(self.wake_key))
        except Exception:
            pass

    async def leave(self) -> None:
        """At shutdown: leave the idle registry; a job handed to us meanwhile is kept ready
        (and handed back with the rest). Always, not only when ``parked`` says so: one
        script call per stop, and a stopped worker that stayed registered would be handed
        the next job (run only after its lock expired)."""
        try:
            await self._leave(blocked=False)
        except Exception as exc:
            log.warning("worker %s could not leave the idle registry (%s); it expires by "
                        "itself", self.token, exc)

    async def _leave(self, blocked: bool) -> None:
        fetched = await self.run(self.ops.leave(self.token, self.lock_ms, blocked))
        self.jobs.ready.extend(fetched.jobs)
        self.parked = False
