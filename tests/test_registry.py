"""Issue 13: the fleet-wide worker registry (heartbeats, ``get_workers``, drop-out)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

import nbqueue
from nbqueue import InvalidOptionError, Queue, Worker, WorkerInfo

from .helpers import wait_until


@pytest.mark.parametrize("mode", ["thread", "asyncio", "process"])
def test_every_worker_mode_registers_heartbeats_and_leaves(conn, r, mode):
    q = Queue(f"reg-{mode}", conn)
    gate = threading.Event() if mode != "process" else None

    def body(job):
        if gate is not None:
            gate.wait(30)
        return 1

    async def abody(job):
        await asyncio.to_thread(gate.wait, 30)
        return 1

    fn = abody if mode == "asyncio" else body
    extra = {"processes": 1} if mode == "process" else {}
    w = Worker(q.name, fn, conn, concurrency=3, mode=mode, heartbeat_interval=200, **extra)
    w.start()
    try:
        workers = wait_until(q.get_workers, 30, message="registered")
        assert len(workers) == 1
        info = workers[0]
        assert isinstance(info, WorkerInfo)
        assert (info.mode, info.concurrency, info.host) == (mode, 3, socket.gethostname())
        if mode != "process":
            assert info.pid == os.getpid()
            assert info.id == w.engine.token
        else:  # the process that runs the engine (a child, or this one's engine thread)
            os.kill(info.pid, 0)
        assert info.last_heartbeat >= info.started_at > 0
        if gate is not None:
            job = q.add({"type": "t"})
            wait_until(lambda: q.get_workers()[0].active == 1, 30, message="active=1")
            gate.set()
            assert job.result(timeout=30) == 1
            wait_until(lambda: q.get_workers()[0].active == 0, 30, message="active=0")
        first = q.get_workers()[0]
        wait_until(lambda: q.get_workers()[0].last_heartbeat > first.last_heartbeat, 30,
                   message="a later heartbeat")
        assert q.get_workers()[0].started_at == first.started_at
    finally:
        w.stop()
    assert q.get_workers() == []  # a graceful stop deregisters at once


def test_manager_get_workers_and_two_workers(conn, r):
    mgr = nbqueue.QueueManager(conn)
    mgr.get_queue("reg-mgr")
    a = Worker("reg-mgr", lambda job: None, conn, concurrency=2, name="alpha")
    b = Worker("reg-mgr", lambda job: None, conn, concurrency=5, mode="asyncio")
    with a, b:
        infos = wait_until(lambda: len(mgr.get_workers("reg-mgr")) == 2
                           and mgr.get_workers("reg-mgr"), 30, message="two workers")
        assert {w.concurrency for w in infos} == {2, 5}
        assert "alpha" in {w.id for w in infos}
    assert mgr.get_workers("reg-mgr") == []


def test_no_heartbeat_on_the_per_job_path(conn, r):
    """One write per worker per interval: 200 jobs leave the heartbeat time unchanged."""
    q = Queue("reg-hot", conn)
    with Worker(q.name, lambda job: None, conn, concurrency=4, heartbeat_interval=60_000):
        info = wait_until(q.get_workers, 30, message="registered")[0]
        batch = q.add_bulk([{"type": "t"} for _ in range(200)])
        wait_until(lambda: q.get_metrics().completed == 200, 60, message="200 done")
        assert len(batch) == 200
        after = q.get_workers()[0]
    assert after.last_heartbeat == info.last_heartbeat
    assert after.started_at == info.started_at


@pytest.mark.parametrize("bad", [0, -5, "soon", True])
def test_heartbeat_interval_bad_input(conn, bad):
    with pytest.raises(InvalidOptionError, match="heartbeat_interval"):
        Worker("reg-bad", lambda job: None, conn, heartbeat_interval=bad)


def test_worker_concurrency_below_one_is_refused(conn):
    for bad in (0, -1):
        with pytest.raises(InvalidOptionError, match="concurrency must be an int >= 1"):
            Worker("reg-bad", lambda job: None, conn, concurrency=bad)


def test_a_started_thread_worker_is_listed_at_once(conn, r):
    q = Queue("reg-now", conn)
    w = Worker(q.name, lambda job: None, conn, concurrency=2).start()
    try:
        assert [info.id for info in q.get_workers()] == [w.engine.token]  # no waiting
    finally:
        w.stop()
    assert q.get_workers() == []
