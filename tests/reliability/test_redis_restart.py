"""Issue 2: Redis (AOF on) stopped and restarted mid-run; everyone reconnects on their own."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from rhelpers import check_states, kill_all, spawn_worker, wait_until

import nbqueue
from nbqueue import Queue, Worker, connect

pytestmark = pytest.mark.reliability


def test_redis_restart_mid_run(aof_server, tmp_path, capsys):
    url = aof_server.url
    conn = connect(url)
    # The processors below touch Redis themselves, so an attempt can fail while Redis is
    # down (a job failure, retried like any other): give the jobs attempts and a backoff.
    q = Queue("rr", conn, default_job_options={"remove_on_complete": False, "attempts": 30,
                                                "backoff": {"type": "fixed", "delay": 300}})
    acked: list[str] = []
    unacked = 0
    stop = threading.Event()

    def producer() -> None:
        nonlocal unacked
        i = 0
        while not stop.is_set():
            try:
                jobs = q.add_bulk([{"type": "t", "payload": {"i": i + k}} for k in range(20)])
                acked.extend(j.id for j in jobs)
                i += 20
            except nbqueue.RedisUnavailableError:
                unacked += 1
                time.sleep(0.2)
            time.sleep(0.02)

    thread_runs: dict[str, int] = {}
    lock = threading.Lock()

    def work(job):  # type: ignore[no-untyped-def]
        time.sleep(0.01)
        with lock:
            thread_runs[job.id] = thread_runs.get(job.id, 0) + 1

    in_proc = Worker("rr", work, connect(url), concurrency=4, lock_duration=3000,
                     stalled_interval=1000, max_stalled_count=100).start()
    log = tmp_path / "w.log"
    procs = [spawn_worker(url, "rr", concurrency=4, lock=3000, stalled=1000, sleep=0.01, log=log)
             for _ in range(2)]
    prod = threading.Thread(target=producer, daemon=True)
    prod.start()
    outage = {}
    try:
        time.sleep(3)
        for graceful in (True, False):
            aof_server.stop(graceful=graceful)  # SIGTERM, then a SIGKILL crash
            time.sleep(0.5)
            # A producer call while Redis is down fails fast with RedisUnavailableError.
            t = time.monotonic()
            with pytest.raises(nbqueue.RedisUnavailableError) as info:
                q.add({"type": "probe"})
            outage[graceful] = time.monotonic() - t
            assert isinstance(info.value, ConnectionError)
            time.sleep(2.0)
            aof_server.start()
            time.sleep(3)
        # and succeeds after
        probe = q.add({"type": "t", "payload": "after"})
        acked.append(probe.id)
        time.sleep(1)
        stop.set()
        prod.join(10)
        r = redis.Redis.from_url(url, decode_responses=True)
        total = len(set(acked))

        def all_done() -> bool:
            m = q.get_metrics()
            return m.waiting == 0 and m.active == 0 and m.delayed == 0

        assert wait_until(all_done, 60), q.get_metrics()
        assert in_proc.is_running, "the in-process worker thread died"
        assert all(p.poll() is None for p in procs), "a worker process died"
        completed = set(r.zrange("nbq:{rr}:completed", 0, -1))
        lost = set(acked) - completed
        sub_runs = {k: int(v) for k, v in r.hgetall("rt:runs:{rr}").items()}
        runs = dict(sub_runs)
        for k, v in thread_runs.items():
            runs[k] = runs.get(k, 0) + v
        dups = sum(1 for k in acked if runs.get(k, 0) > 1)
        with capsys.disabled():
            print(f"\n[redis-restart] acked_jobs={total} restarts=2 (SIGTERM, SIGKILL) "
                  f"failed_producer_calls={unacked} probe_failed_in="
                  f"{outage[True]:.2f}s/{outage[False]:.2f}s lost={len(lost)} "
                  f"duplicates={dups} thread_worker_processed={in_proc.processed}")
        where = {j: (r.hgetall(f"nbq:{{rr}}:job:{j}"), sub_runs.get(j), thread_runs.get(j))
                 for j in sorted(lost)[:5]}
        assert not lost, where
        assert all(v < 10 for v in outage.values())
        assert in_proc.processed > 0
        assert check_states(r, "rr") == []
    finally:
        stop.set()
        kill_all(procs)
        in_proc.stop(timeout=5)
