"""Issue 21 item 2: a process-mode child that dies.

Before: the job was left to the stalled rules (active ~57 s, run again, failed as
``stalled`` at ~87 s with ``attempts_made=1``; its ``attempts``/``backoff`` had no effect);
the exit code or signal was only in the worker's log; a body that forked and exited kept
its job active 100 s+ (the grandchild held the pipe open, and the parent waited for EOF);
``multiprocessing`` in a body failed ("daemonic processes are not allowed to have
children"). Now the parent finds the child dead by its pid, fails that attempt at once with
an error type naming the exit code or signal (``killed by SIGKILL (out of memory?)``), the
job's retry policy applies, the child's process group (the body's descendants) is killed
with it, and ``multiprocessing`` works inside a body.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any

import pytest
import redis
from rhelpers import alive, check_states, wait_until

from nbqueue import Queue, Worker, connect

pytestmark = pytest.mark.reliability


def _body(job: Any) -> Any:
    r = redis.Redis.from_url(job.data["payload"]["url"])
    r.rpush(f"runs:{job.id}", os.getpid())
    how = job.data["payload"]["how"]
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "exit3":
        os._exit(3)
    if how == "fork_and_exit":  # a grandchild that holds the pipe, then the body exits
        pid = os.fork()
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        r.rpush(f"grandchild:{job.id}", pid)
        os._exit(0)
    if how == "leave_behind":  # a child and a double-forked orphan, then a normal return
        for double in (False, True):
            pid = os.fork()
            if pid == 0:
                if double and os.fork() != 0:
                    os._exit(0)  # the orphan's parent exits at once
                redis.Redis.from_url(job.data["payload"]["url"]).rpush(f"left:{job.id}",
                                                                      os.getpid())
                time.sleep(120)
                os._exit(0)
        while r.llen(f"left:{job.id}") < 2:  # both are running
            time.sleep(0.01)
        return "ok"
    if how == "multiprocessing":
        with multiprocessing.get_context("fork").Pool(2) as pool:
            return pool.map(abs, [-1, -2, -3])
    return "ok"


@pytest.fixture
def setup(fresh_server: Any) -> Any:
    conn = connect(fresh_server.url)
    q = Queue("cd", conn)
    worker = Worker("cd", _body, conn, mode="process", concurrency=1)
    worker.start()
    yield fresh_server, q, fresh_server.client()
    worker.stop()


def _add(q: Queue, url: str, how: str, **opts: Any) -> Any:
    return q.add({"type": how, "payload": {"how": how, "url": url}}, **opts)


def test_a_killed_child_fails_its_attempt_at_once_and_the_retry_policy_applies(
        setup: Any) -> None:
    server, q, r = setup
    job = _add(q, server.url, "sigkill", attempts=2, backoff={"type": "fixed", "delay": 100})
    t = time.monotonic()
    # old code: still active after 20 s (left to the stalled rules)
    assert wait_until(lambda: job.get_state() == "failed", 20), job.get_state()
    took = time.monotonic() - t
    h = r.hgetall(f"nbq:{{cd}}:job:{job.id}")
    assert r.llen(f"runs:{job.id}") == 2  # both attempts ran (attempts=2)
    assert h["atm"] == "2", h
    assert "SIGKILL" in h["et"] and "out of memory" in h["et"], h["et"]
    assert "SIGKILL" in h["fr"], h["fr"]
    print(f"[child-death] SIGKILL, attempts=2: failed after both attempts in {took:.1f} s")
    assert check_states(r, "cd") == []


def test_an_exit_code_is_named(setup: Any) -> None:
    server, q, r = setup
    job = _add(q, server.url, "exit3")
    assert wait_until(lambda: job.get_state() == "failed", 20), job.get_state()
    h = r.hgetall(f"nbq:{{cd}}:job:{job.id}")
    assert "exit code 3" in h["et"], h["et"]
    after = _add(q, server.url, "ok")  # the worker goes on with a new child
    assert after.result(timeout=30) == "ok"


def test_a_body_that_forks_and_exits_ends_its_job_and_its_grandchild(setup: Any) -> None:
    server, q, r = setup
    job = _add(q, server.url, "fork_and_exit")
    # old code: active 100 s+ (the grandchild held the pipe open)
    assert wait_until(lambda: job.get_state() == "failed", 20), job.get_state()
    grandchild = int(r.lpop(f"grandchild:{job.id}"))
    assert wait_until(lambda: not alive(grandchild), 10), "the grandchild outlived its job"
    assert "exit code 0" in r.hget(f"nbq:{{cd}}:job:{job.id}", "et")
    others = [_add(q, server.url, "ok") for _ in range(3)]
    assert [o.result(timeout=30) for o in others] == ["ok"] * 3


def test_multiprocessing_inside_a_body_works(setup: Any) -> None:
    server, q, _ = setup
    job = _add(q, server.url, "multiprocessing")
    assert job.result(timeout=60) == [1, 2, 3]


def test_what_a_body_leaves_running_dies_with_its_job(setup: Any) -> None:
    server, q, r = setup
    job = _add(q, server.url, "leave_behind")
    assert job.result(timeout=30) == "ok"
    left = [int(p) for p in r.lrange(f"left:{job.id}", 0, -1)]
    # old code: both still running (until the worker stopped, or for ever)
    assert wait_until(lambda: not any(alive(p) for p in left), 10), left
