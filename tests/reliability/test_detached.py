"""Detached process workers that outlive the kernel, and jobs of dead workers released at
once (issue 19 item 5; DESIGN "Named, durable batches").

A "kernel" here is ``kernel_main.py``, a process that defines the processor in ``__main__``
(as a notebook cell does) and is killed with SIGKILL, as a kernel restart does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import nbqueue
from nbqueue import InvalidOptionError, JobState, Queue, QueueManager, Worker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MARKER = "KERNEL-FN-MARKER-5b1e"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _wait(cond: Any, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def kernels(redis_url: str) -> Iterator[Any]:
    """Start kernel_main.py processes (killed at the end, with the detached workers they
    left, by pid)."""
    procs: list[subprocess.Popen[str]] = []
    pids: list[int] = []

    def start(queue: str, mode: str) -> tuple[subprocess.Popen[str], list[str]]:
        p = subprocess.Popen([sys.executable, str(HERE / "kernel_main.py"), redis_url, queue,
                              mode], stdout=subprocess.PIPE, text=True, env=_env())
        procs.append(p)
        assert p.stdout is not None
        words = p.stdout.readline().split()
        assert words, "the kernel stand-in printed nothing"
        if words[0] == "DETACHED":
            pids.append(int(words[2]))
        return p, words

    start.pids = pids  # type: ignore[attr-defined]
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
    for pid in pids:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def _values(r: redis.Redis) -> Iterator[str]:
    """Every value stored in Redis (strings, hash fields and values, list/set/zset members,
    stream fields), as text."""
    for key in r.scan_iter(count=1000):
        t = r.type(key)
        if t == "string":
            yield str(r.get(key))
        elif t == "hash":
            for k, v in r.hgetall(key).items():
                yield f"{k} {v}"
        elif t == "list":
            yield from map(str, r.lrange(key, 0, -1))
        elif t == "set":
            yield from map(str, r.smembers(key))
        elif t == "zset":
            yield from map(str, r.zrange(key, 0, -1))
        elif t == "stream":
            for _, fields in r.xrange(key):
                yield " ".join(f"{k} {v}" for k, v in fields.items())


def test_a_detached_worker_outlives_its_kernel_and_stops_by_id(conn, r, kernels,
                                                               redis_url: str) -> None:
    q = Queue("dk", conn)
    kernel, words = kernels("dk", "detach")
    wid, pid = words[1], int(words[2])
    kernel.send_signal(signal.SIGKILL)  # the kernel restarts / dies
    kernel.wait(10)
    # the function went over a pipe, never through Redis
    assert not [v for v in _values(r) if MARKER in v]
    workers = q.get_workers()
    assert [(w.id, w.pid, w.mode, w.detached) for w in workers] == [(wid, pid, "process", "dk")]
    batch = q.map([{"type": "t", "payload": {"x": i}} for i in range(6)])
    assert [v["y"] for v in batch.results(timeout=60)] == [2 * i for i in range(6)]
    ran_in = {int(p) for p in r.hgetall("k:pid:{dk}").values()}
    assert kernel.pid not in ran_in and pid not in ran_in  # its own children ran them
    # a failing chunk: the remote traceback shows the kernel's own source lines
    bad = q.add({"type": "t", "payload": {"x": 1, "fail": True}})
    with pytest.raises(nbqueue.JobFailedError) as info:
        bad.result(timeout=60)
    trace = info.value.remote_traceback or ""
    assert "kernel_main.py" in trace and 'raise ValueError("a failing chunk")' in trace
    # nbqueue workers stop ID, from another process
    out = subprocess.run([sys.executable, "-m", "nbqueue", "--url", redis_url, "workers",
                          "stop", wid], capture_output=True, text=True, env=_env(),
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"worker {wid} of 'dk' stopped" in out.stdout
    assert q.get_workers() == []
    _wait(lambda: _gone(pid), 30, "the detached worker to exit")


def test_starting_again_with_the_same_name_replaces_the_detached_worker(conn, kernels) -> None:
    q = Queue("dk_again", conn)
    kernel, words = kernels("dk_again", "detach")
    old_id, old_pid = words[1], int(words[2])
    kernel.kill()
    kernel.wait(10)
    # a new kernel runs the cell again, with a changed function
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec("def triple(job):\n    return job.payload['x'] * 3\n", ns)
    mgr = QueueManager(connection=conn)
    mgr.get_queue("dk_again")
    handle = mgr.start_worker("dk_again", 1, mode="process", processor=ns["triple"],
                              detach=True)
    kernels.pids.append(handle.pid)
    try:
        assert handle.id != old_id and handle.name == "dk_again"
        _wait(lambda: _gone(old_pid), 60, "the replaced worker to exit")
        assert [w.id for w in q.get_workers()] == [handle.id]
        assert q.add({"type": "t", "payload": {"x": 5}}).result(timeout=60) == 15
    finally:
        assert handle.stop(timeout=60)
    _wait(lambda: _gone(handle.pid), 30, "the detached worker to exit")


def test_jobs_of_a_killed_kernel_are_released_as_soon_as_a_worker_here_notices(
        conn, r, kernels) -> None:
    """The kernel's own (thread-mode) worker holds two jobs with 600 s locks when the kernel
    is killed. A worker started on this machine releases them at its first heartbeat (they
    used to wait for the locks to expire: 600 s here, 30 s by default)."""
    q = Queue("dk_dead", conn)
    kernel, _ = kernels("dk_dead", "inkernel")
    jobs = [q.add({"type": "t", "payload": {"x": i, "sleep": 600}}) for i in range(2)]
    _wait(lambda: len(r.hgetall("k:runs:{dk_dead}")) == 2, 60, "both jobs to start")
    dead_id = q.get_workers()[0].id
    kernel.send_signal(signal.SIGKILL)
    kernel.wait(10)
    killed = time.monotonic()
    assert all(j.get_state() is JobState.ACTIVE for j in jobs)
    with Worker("dk_dead", lambda job: job.payload["x"] + 100, conn):
        assert [j.result(timeout=60) for j in jobs] == [100, 101]
    print(f"\nreleased and re-run {time.monotonic() - killed:.2f} s after the kill")
    assert dead_id not in {w.id for w in q.get_workers()}
    # each counted one stall (as at lock expiry), then ran again
    assert [r.hget(q._ops.keys.job(j.id), "stc") for j in jobs] == ["1", "1"]


def test_a_killed_detached_worker_s_jobs_go_to_a_worker_on_the_same_host(
        conn, r, kernels) -> None:
    """The detached worker (600 s locks) is killed -9 while it runs two jobs; a worker
    already running on this machine releases them at its next heartbeat."""
    q = Queue("dk_kill", conn)
    _, words = kernels("dk_kill", "detach")
    wid, pid = words[1], int(words[2])
    jobs = [q.add({"type": "t", "payload": {"x": i, "sleep": 600}}) for i in range(2)]
    _wait(lambda: len(r.hgetall("k:runs:{dk_kill}")) == 2, 60, "both jobs to start")
    with Worker("dk_kill", lambda job: f"rescued {job.payload['x']}", conn,
                heartbeat_interval=500):
        time.sleep(1.0)  # a few heartbeats: the detached worker is alive, nothing moves
        assert all(j.get_state() is JobState.ACTIVE for j in jobs)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        assert [j.result(timeout=60) for j in jobs] == ["rescued 0", "rescued 1"]
        print(f"\nre-run {time.monotonic() - killed:.2f} s after the kill -9")
    assert wid not in {w.id for w in q.get_workers()}


def test_detach_needs_process_mode_and_a_picklable_processor(conn) -> None:
    import threading

    mgr = QueueManager(connection=conn)
    mgr.get_queue("dk_bad")
    mgr.register_processor("dk_bad", lambda job: None)
    with pytest.raises(InvalidOptionError, match="mode='process'"):
        mgr.start_worker("dk_bad", mode="thread", detach=True)
    lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot be handed to a detached worker"):
        mgr.start_worker("dk_bad", mode="process", processor=lambda job: lock, detach=True)
    assert Queue("dk_bad", conn).get_workers() == []


def test_aio_start_worker_detach(conn, kernels) -> None:
    import asyncio

    from nbqueue import aio

    ns: dict[str, Any] = {"__name__": "__main__"}
    exec("def plus_one(job):\n    return job.payload + 1\n", ns)

    async def main() -> Any:
        mgr = aio.QueueManager(connection=conn)
        mgr.get_queue("dk_aio")
        handle = await mgr.start_worker("dk_aio", mode="process", processor=ns["plus_one"],
                                        detach=True)
        kernels.pids.append(handle.pid)
        job = await mgr.add_job("dk_aio", {"type": "t", "payload": 41})
        assert await job.result(timeout=60) == 42
        return handle

    handle = asyncio.run(main())
    assert [w.detached for w in Queue("dk_aio", conn).get_workers()] == ["dk_aio"]
    assert handle.stop(timeout=60)
    _wait(lambda: _gone(handle.pid), 30, "the detached worker to exit")


def test_a_wait_after_the_kernel_died_says_nobody_consumes_the_queue(conn, kernels) -> None:
    """The dead kernel's registration lingers until its ttl (15 s); a wait in the new
    kernel does not count it: its pid is gone (nbqueue.reaper)."""
    q = Queue("dk_wait", conn)
    kernel, _ = kernels("dk_wait", "inkernel")
    kernel.kill()
    kernel.wait(10)
    assert [w.pid for w in q.get_workers()] == [kernel.pid]
    job = q.add({"type": "t", "payload": {"x": 1}})
    with pytest.raises(nbqueue.ResultTimeoutError,
                       match="no live worker consumes queue 'dk_wait'"):
        job.result(timeout=1)
