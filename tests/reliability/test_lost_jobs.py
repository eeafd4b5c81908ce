"""Issue 21 item 5: a refused finish, and a hand-off to a SIGKILLed parked worker, free
their job in seconds.

* Refused finish: while a worker runs a job, its lock passes to a holder that is no live
  worker (here by hand: ``lk`` = ``ghost:1``, the state a lost lock leaves). Its finish is
  refused (lock lost) -- before, the job then stayed ``active`` for lock expiry + the next
  sweep (~60 s) before it ran again. Now the refused finish sees that no registered worker
  holds the lock, expires it, and the worker sweeps at once: the job runs again in seconds.
* Dead hand-off: a parked worker (a subprocess) is SIGKILLed; a job added right after is
  handed to it (its idle registration outlives it). Before: that job completed ~56 s later
  while a live worker sat idle. Now a live worker on the same machine releases it at once.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from rhelpers import check_states, spawn_worker, wait_until

from nbqueue import Queue, Worker, connect

pytestmark = pytest.mark.reliability


def test_a_refused_finish_frees_its_job_at_once(fresh_server: Any) -> None:
    r = fresh_server.client()
    conn = connect(fresh_server.url)
    q = Queue("rf", conn)
    runs: list[float] = []

    def work(job: Any) -> str:
        runs.append(time.monotonic())
        if len(runs) == 1:
            r.hset(f"nbq:{{rf}}:job:{job.id}", "lk", "ghost:1")  # the lock is lost
            time.sleep(0.5)
        return "ok"

    job = q.add({"x": 1})
    with Worker("rf", work, conn):  # lock 30 s, stalled sweep every 30 s (the defaults)
        # old code: active ~60 s (lock expiry + the next sweep) before the second run
        assert wait_until(lambda: job.get_state() == "completed", 15), job.get_state()
    assert len(runs) == 2
    print(f"[refused-finish] second run {runs[1] - runs[0]:.1f} s after the first")
    assert runs[1] - runs[0] < 10
    assert check_states(r, "rf") == []


def test_a_job_handed_to_a_sigkilled_parked_worker_runs_at_once(fresh_server: Any,
                                                                 tmp_path: Any) -> None:
    r = fresh_server.client()
    conn = connect(fresh_server.url)
    dead = spawn_worker(fresh_server.url, "dh", concurrency=1, lock=30_000, stalled=30_000,
                        log=tmp_path / "w.log")
    try:
        assert wait_until(lambda: r.zcard("nbq:{dh}:idle") >= 1, 30)  # parked
        dead.send_signal(signal.SIGKILL)
        dead.wait(10)
    finally:
        if dead.poll() is None:
            dead.kill()
    job = Queue("dh", conn).add({"x": 1})
    assert r.zscore("nbq:{dh}:active", job.id) is not None  # handed to the dead worker
    t = time.monotonic()
    with Worker("dh", lambda job: "ok", conn):  # a live worker on the same machine
        # old code: ~56 s (lock expiry + the next sweep)
        assert wait_until(lambda: job.get_state() == "completed", 15), job.get_state()
    print(f"[dead-hand-off] job handed to a SIGKILLed worker completed in "
          f"{time.monotonic() - t:.1f} s")
    assert check_states(r, "dh") == []
