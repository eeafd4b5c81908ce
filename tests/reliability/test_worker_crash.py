"""Issue 1: workers SIGKILLed every second and restarted; no job lost, none stuck."""

from __future__ import annotations

import time

import pytest
import redis
from rhelpers import check_states, kill_all, spawn_worker, wait_until

from nbqueue import Queue, connect

pytestmark = pytest.mark.reliability

N_JOBS = 2000
N_WORKERS = 3


def test_sigkill_workers_every_second(fresh_server, tmp_path, capsys):
    url = fresh_server.url
    r = redis.Redis.from_url(url, decode_responses=True)
    conn = connect(url)
    q = Queue("crash", conn, default_job_options={"remove_on_complete": False})
    for start in range(0, N_JOBS, 500):
        q.add_bulk([{"type": "t", "payload": {"i": i}} for i in range(start, start + 500)])
    log = tmp_path / "workers.log"
    spawn = lambda: spawn_worker(url, "crash", concurrency=4, lock=2000, stalled=1000,  # noqa: E731
                                 sleep=0.05, log=log)
    workers = [spawn() for _ in range(N_WORKERS)]
    all_procs = list(workers)
    kills = 0
    t0 = time.monotonic()
    try:
        victim = 0
        while r.hlen("rt:done:{crash}") < N_JOBS and time.monotonic() - t0 < 150:
            time.sleep(1.0)
            if r.zcard("nbq:{crash}:wait") == 0 and r.zcard("nbq:{crash}:active") == 0:
                continue  # nothing left to interrupt; let the count settle
            workers[victim].kill()
            workers[victim].wait()
            kills += 1
            workers[victim] = spawn()
            all_procs.append(workers[victim])
            victim = (victim + 1) % N_WORKERS
        assert wait_until(lambda: r.hlen("rt:done:{crash}") >= N_JOBS
                          and r.zcard("nbq:{crash}:completed") >= N_JOBS, 60), \
            (r.hlen("rt:done:{crash}"), q.get_metrics())
        elapsed = time.monotonic() - t0
    finally:
        kill_all(all_procs)
    m = q.get_metrics()
    runs = {k: int(v) for k, v in r.hgetall("rt:runs:{crash}").items()}
    done = {k: int(v) for k, v in r.hgetall("rt:done:{crash}").items()}
    dup_jobs = sum(1 for v in runs.values() if v > 1)
    extra_runs = sum(runs.values()) - N_JOBS
    done_twice = sum(1 for v in done.values() if v > 1)
    with capsys.disabled():
        print(f"\n[crash] jobs={N_JOBS} workers={N_WORKERS} kills={kills} "
              f"elapsed={elapsed:.1f}s runs={sum(runs.values())} jobs_run_more_than_once="
              f"{dup_jobs} extra_runs={extra_runs} completed_bodies_twice={done_twice} "
              f"failed={m.failed}")
    assert kills >= 5
    assert len(done) == N_JOBS  # every job's body ran to the end at least once
    assert m.completed == N_JOBS and m.failed == 0
    assert m.active == 0 and m.waiting == 0 and m.delayed == 0
    assert check_states(r, "crash") == []
    conn.close()
