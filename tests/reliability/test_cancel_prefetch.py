"""Issue 21 item 1: cancelling prefetched jobs.

``concurrency=2, prefetch=10``: two jobs run, ten more are fetched (locked for the worker)
and wait in it. Cancelling those ten must fail each at once (``cancelled``), start none of
them, and never run more than two bodies at a time. Before: cancelling a prefetched job
booked it through the path of a job that had ended, which started the next prefetched job
as if a slot had freed -- 5 of 10 cancelled jobs started and completed (thread mode), 3
bodies ran at once under ``concurrency=2`` (asyncio).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from rhelpers import check_states, wait_until

from nbqueue import Queue, Worker, connect

pytestmark = pytest.mark.reliability


class Bodies:
    """What the bodies did: which started, how many ran at once at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.now = 0
        self.most = 0

    def enter(self, job_id: str) -> None:
        with self.lock:
            self.started.append(job_id)
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


@pytest.mark.parametrize("mode", ["thread", "asyncio"])
def test_cancelled_prefetched_jobs_never_start(fresh_server: Any, mode: str) -> None:
    r = fresh_server.client()
    conn = connect(fresh_server.url)
    q = Queue("pf", conn)
    bodies = Bodies()

    def work(job: Any) -> str:
        bodies.enter(job.id)
        time.sleep(1.5)
        bodies.leave()
        return job.id

    async def awork(job: Any) -> str:
        bodies.enter(job.id)
        await asyncio.sleep(1.5)
        bodies.leave()
        return job.id

    jobs = q.add_bulk([{"i": i} for i in range(12)])
    worker = Worker("pf", work if mode == "thread" else awork, conn, mode=mode,
                    concurrency=2, prefetch=10)
    worker.start()
    try:
        # two run, ten are fetched and held by the worker
        assert wait_until(lambda: r.zcard("nbq:{pf}:active") == 12 and len(bodies.started) == 2,
                          20)
        running = set(bodies.started)
        held = [j for j in jobs if j.id not in running]
        assert len(held) == 10
        for j in held:
            assert q.cancel(j.id) is True
        assert wait_until(lambda: all(j.get_state() == "failed" for j in held), 20)
        assert wait_until(lambda: all(j.get_state() == "completed"
                                      for j in jobs if j.id in running), 20)
    finally:
        worker.stop()
    print(f"[cancel-prefetch {mode}] started {len(set(bodies.started) - running)} of 10 "
          f"cancelled, most at once {bodies.most}")
    assert set(bodies.started) == running, bodies.started  # no cancelled job started
    assert bodies.most <= 2, bodies.most
    assert all(r.hget(f"nbq:{{pf}}:job:{j.id}", "et") == "cancelled" for j in held)
    assert check_states(r, "pf") == []
