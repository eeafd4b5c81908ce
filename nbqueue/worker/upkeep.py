"""Upkeep: the background duties of a worker, each its own task on the engine's loop.

Lock renewal extends the locks of every job the worker holds (running or ready) every
half lock period. The stalled sweep moves jobs whose worker died (lock expired) back to
wait, or fails them after ``max_stalled_count`` stalls (dead-lettered like any failure).
The heartbeat registers the worker in its queue's worker registry (``Queue.get_workers``)
at start, renews it every ``heartbeat_ms`` (one script call: never on the per-job path) with
the number of jobs running, and takes it out at a graceful stop; a worker that dies drops
out when its registration expires, ``HEARTBEAT_TTL_FACTOR`` intervals after its last beat.
The cancel listener blocks (BLPOP, on a connection of its own) on this worker's cancel
list, where ``cancel.lua`` pushes the id of an active job it holds: no polling, and the
list has the queue's hash tag, so it lives in the queue's slot on a Redis Cluster. A list
rather than pub/sub: a request made while the listener reconnects waits for it.
A stop request (``nbqueue.reaper.request_stop``) arrives on the same list and calls
``on_stop``. After each heartbeat the worker releases the jobs of workers on this machine
whose process is gone (``nbqueue.reaper``) and sweeps them back at once.
The flow upkeep (every ``flows.UPKEEP_S``) delivers dependency notifications a crashed
process left in this queue and re-registers the dependencies of its waiting jobs whose
re-check time has come (``nbqueue.flows``); ``resolve_flows`` delivers the notifications a
finish just queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .. import flows, reaper
from ..dataplane import sweep
from ..ops import QueueOps
from ..protocol import run_async
from .execution import Execution
from .outbox import Outbox

log = logging.getLogger("nbqueue.worker")

HEARTBEAT_MS = 5_000  # default heartbeat interval
HEARTBEAT_TTL_FACTOR = 3  # a registration lives this many intervals after its last beat
STOP_WAIT_S = 2.0  # stop() waits this long for the cancelled upkeep tasks


class Upkeep:
    def __init__(self, ops: QueueOps, token: str, *, lock_ms: int, stalled_ms: int,
                 max_stalled: int, jobs: Execution, outbox: Outbox,
                 heartbeat_ms: int = HEARTBEAT_MS,
                 info: Mapping[str, Any] | None = None,
                 new_client: Callable[[], Any] | None = None) -> None:
        self.ops = ops
        self.heartbeat_ms = heartbeat_ms
        self.info = dict(info or {})  # host, pid, mode, concurrency
        self.token = token
        self.lock_ms = lock_ms
        self.stalled_ms = stalled_ms
        self.max_stalled = max_stalled
        self.jobs = jobs
        self.outbox = outbox
        self.client: Any = None
        self.new_client = new_client
        self._tasks: list[asyncio.Task[None]] = []
        self.on_stop: Callable[[], None] | None = None  # a stop request came (reaper.py)
        # Set by stop() before it cancels the tasks: a loop also ends at its next turn if a
        # cancellation that hit it inside a Redis call was swallowed on the way (seen: the
        # task then slept on, and stop() waited for it until the worker's stop timed out).
        self._closing = False

    def start(self, client: Any) -> None:
        """Start the background tasks (after ``beat()`` registered the worker)."""
        self.client = client
        self._tasks = [asyncio.create_task(self.renew_locks()),
                       asyncio.create_task(self.sweep_stalled()),
                       asyncio.create_task(self.heartbeat()),
                       asyncio.create_task(self.flow_upkeep())]
        if self.new_client is not None:
            self._tasks.append(asyncio.create_task(self.listen_cancels()))

    async def stop(self) -> None:
        self._closing = True
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            # Not gather(): a cancellation that lands inside a Redis call can be swallowed
            # below us (seen with the stalled sweep's first call: the task then slept its
            # 30 s and the worker's stop timed out). Such a task is left to the loop's own
            # shutdown, which cancels it again, and every loop ends at its next turn.
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
            if pending:
                log.debug("worker %s: %d upkeep task(s) still ending", self.token,
                          len(pending))
        self._tasks = []
        try:  # leave the registry now rather than when the registration expires
            await run_async(self.client, self.ops.deregister(self.token))
        except Exception as exc:
            log.warning("worker %s could not leave the worker registry (%s); it drops out "
                        "when its registration expires", self.token, exc)

    async def beat(self) -> None:
        """One heartbeat (the first one registers): never raises but for cancellation."""
        try:
            await run_async(self.client, self.ops.heartbeat(
                self.token, self.heartbeat_ms * HEARTBEAT_TTL_FACTOR, self.info,
                len(self.jobs.running)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("worker %s could not send its heartbeat: %s", self.token, exc)
        try:  # workers of this machine whose process is gone: their jobs back now
            dead, held = await run_async(self.client, reaper.reap(self.ops, self.token))
            if dead:
                log.warning("worker %s: worker(s) %s of this machine are gone (pid not alive); "
                            "%d job(s) they held go back now", self.token, ", ".join(dead),
                            held)
            if held:
                await self.sweep_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("worker %s could not check for gone workers: %s", self.token, exc)
        try:  # artifact files of jobs that retention deleted (an fsspec store; one SRANDMEMBER)
            await run_async(self.client, sweep(self.ops.keys))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("worker %s could not sweep artifact files: %s", self.token, exc)

    async def heartbeat(self) -> None:
        while not self._closing:  # the engine sent the first beat before starting us
            await asyncio.sleep(self.heartbeat_ms / 1000)
            if not self._closing:
                await self.beat()

    async def renew_locks(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.lock_ms / 2000)
            locks = self.jobs.held_locks()
            if not locks:
                continue
            try:
                lost = await run_async(self.client, self.ops.extend_locks(locks, self.lock_ms))
            except Exception as exc:
                log.warning("worker %s could not renew locks: %s", self.token, exc)
                continue
            for jid in lost:
                # Its outcome will be refused by finish.lua (and logged then).
                log.warning("worker %s lost the lock of job %s", self.token, jid)

    async def sweep_once(self) -> None:
        """One stalled sweep (at most one per interval across the queue's workers)."""
        _, failed = await run_async(self.client, self.ops.check_stalled(
            self.max_stalled, self.stalled_ms, self.outbox.dead_letter))
        if failed and self.outbox.dead_letter:
            records = await run_async(self.client, self.ops.get_jobs_by_id(failed))
            for rec in records:
                if rec is not None:
                    rec.attempts_made -= 1  # dead_letter_entry counts this attempt
                    self.outbox.add_dead_letter(rec, rec.failed_reason or "stalled",
                                                "stalled")
            await self.outbox.send_dead_letters()

    async def sweep_stalled(self) -> None:
        while not self._closing:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stalled-job check failed: %s", exc)
            await asyncio.sleep(self.stalled_ms / 1000)

    async def listen_cancels(self) -> None:
        assert self.new_client is not None
        client = self.new_client()
        try:
            while True:
                try:
                    job_id = await run_async(client, self.ops.next_cancel(self.token, 5))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("worker %s: cancel listener: %s", self.token, exc)
                    await asyncio.sleep(1.0)
                    continue
                if job_id == reaper.STOP_REQUEST:
                    log.warning("worker %s: a stop was requested; stopping gracefully",
                                self.token)
                    if self.on_stop is not None:
                        self.on_stop()
                elif job_id is not None:
                    self.jobs.cancel(job_id)
        finally:
            try:
                await client.aclose()
            except Exception:
                pass

    async def resolve_flows(self) -> None:
        """Deliver the dependency notifications our finish queued (``flows.resolve``); on
        an error they stay queued for the next run (ours, or any worker's upkeep)."""
        try:
            await run_async(self.client, flows.resolve(self.ops, self.outbox.dead_letter))
        except Exception as exc:
            log.warning("worker %s: dependency notifications not delivered yet (%s); the "
                        "upkeep retries", self.token, exc)

    async def flow_upkeep(self) -> None:
        while not self._closing:
            await asyncio.sleep(flows.UPKEEP_S)
            if self._closing:
                return
            try:
                await run_async(self.client, flows.upkeep(
                    self.ops, dead_letter=self.outbox.dead_letter))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dependency upkeep of %s failed: %s", self.ops.name, exc)
