"""Issue 8: SIGTERM to a worker process finishes (or hands back) every active job."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import redis
from rhelpers import check_states, kill_all, spawn_worker, wait_until

from nbqueue import Queue, connect

pytestmark = pytest.mark.reliability


def _setup(url: str, name: str, n: int) -> tuple[redis.Redis, Queue]:
    r = redis.Redis.from_url(url, decode_responses=True)
    q = Queue(name, connect(url), default_job_options={"remove_on_complete": False})
    q.add_bulk([{"type": "t", "payload": {"i": i}} for i in range(n)])
    return r, q


def test_sigterm_finishes_active_jobs_within_grace(fresh_server, tmp_path):
    r, q = _setup(fresh_server.url, "gs1", 8)
    log = tmp_path / "w.log"
    w = spawn_worker(fresh_server.url, "gs1", concurrency=4, sleep=1.5, grace=10, log=log)
    try:
        assert wait_until(lambda: r.hlen("rt:runs:{gs1}") == 4, 20)
        t = time.monotonic()
        w.send_signal(signal.SIGTERM)
        w.wait(15)
        took = time.monotonic() - t
    finally:
        kill_all([w])
    assert w.returncode == 0, log.read_text()
    assert "exited" in log.read_text()
    m = q.get_metrics()
    assert took < 10
    assert m.active == 0
    assert m.completed == 4 and m.waiting == 4  # the 4 running ones finished, no new ones taken
    assert r.hlen("rt:done:{gs1}") == 4
    assert check_states(r, "gs1") == []


def test_sigterm_hands_back_jobs_that_outlive_grace(fresh_server, tmp_path):
    r, q = _setup(fresh_server.url, "gs2", 4)
    log = tmp_path / "w.log"
    w = spawn_worker(fresh_server.url, "gs2", concurrency=4, sleep=6, grace=1, log=log)
    try:
        assert wait_until(lambda: r.hlen("rt:runs:{gs2}") == 4, 20)
        t = time.monotonic()
        w.send_signal(signal.SIGTERM)
        try:
            w.wait(8)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running {time.monotonic() - t:.1f}s after SIGTERM "
                        f"with grace=1s: {log.read_text()}")
        took = time.monotonic() - t
    finally:
        kill_all([w])
    m = q.get_metrics()
    assert took < 4, took
    assert m.active == 0 and m.waiting == 4 and m.completed == 0, m
    assert check_states(r, "gs2") == []
    for job in q.get_jobs("waiting"):
        assert job.attempts_made == 0  # handing back is not an attempt
    # and another worker runs them
    w2 = spawn_worker(fresh_server.url, "gs2", concurrency=4, sleep=0.1, log=log)
    try:
        assert wait_until(lambda: q.get_metrics().completed == 4, 20)
    finally:
        kill_all([w2])
