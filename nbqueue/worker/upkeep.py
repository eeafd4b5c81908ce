"""Upkeep: the two background duties of a worker, each its own task on the engine's loop.

Lock renewal extends the locks of every job the worker holds (running or ready) every
half lock period. The stalled sweep moves jobs whose worker died (lock expired) back to
wait, or fails them after ``max_stalled_count`` stalls (dead-lettered like any failure).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..ops import QueueOps
from ..protocol import run_async
from .execution import Execution
from .outbox import Outbox

log = logging.getLogger("nbqueue.worker")


class Upkeep:
    def __init__(self, ops: QueueOps, token: str, *, lock_ms: int, stalled_ms: int,
                 max_stalled: int, jobs: Execution, outbox: Outbox) -> None:
        self.ops = ops
        self.token = token
        self.lock_ms = lock_ms
        self.stalled_ms = stalled_ms
        self.max_stalled = max_stalled
        self.jobs = jobs
        self.outbox = outbox
        self.client: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, client: Any) -> None:
        self.client = client
        self._tasks = [asyncio.create_task(self.renew_locks()),
                       asyncio.create_task(self.sweep_stalled())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def renew_locks(self) -> None:
        while True:
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

    async def sweep_stalled(self) -> None:
        while True:
            try:
                _, failed = await run_async(self.client, self.ops.check_stalled(
                    self.max_stalled, self.stalled_ms))
                if failed and self.outbox.dead_letter:
                    records = await run_async(self.client, self.ops.get_jobs_by_id(failed))
                    for rec in records:
                        if rec is not None:
                            rec.attempts_made -= 1  # dead_letter_entry counts this attempt
                            self.outbox.add_dead_letter(rec, rec.failed_reason or "stalled",
                                                        "stalled")
                    await self.outbox.send_dead_letters()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stalled-job check failed: %s", exc)
            await asyncio.sleep(self.stalled_ms / 1000)
