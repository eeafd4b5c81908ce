"""Process mode: the parent holds the locks, children only run job bodies (issue 12 items 2
and 7). A child stuck in GIL-holding C code keeps its lock and runs once; past its timeout
(or on cancel) it is killed and replaced without losing other jobs; SIGTERM to
``nbqueue worker --mode process`` stops gracefully and no child outlives the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis
from rhelpers import REPO, alive, check_states, kill_all, wait_until

from nbqueue import JobFailedError, JobState, Queue, Worker, connect
from nbqueue.ops import QueueOps

pytestmark = pytest.mark.reliability


def _calibrate(seconds: float) -> int:
    """n such that ``sum(range(n))`` (one C call holding the GIL) takes about ``seconds``."""
    n = 2 * 10**7
    t = time.perf_counter()
    sum(range(n))
    took = max(time.perf_counter() - t, 1e-3)
    return int(n * seconds / took)


def _gil_hog(job):
    """One C call that holds the GIL for the whole job (no bytecode runs meanwhile)."""
    r = redis.Redis.from_url(job.data["payload"]["url"])
    r.rpush(f"runs:{job.id}", os.getpid())
    return sum(range(job.data["payload"]["n"]))


def _quick(job):
    redis.Redis.from_url(job.data["payload"]["url"]).rpush(f"runs:{job.id}", os.getpid())
    return job.data["payload"]["v"] * 2


def _dispatch(job):
    return _gil_hog(job) if job.name == "hog" else _quick(job)


class _Sweeper:
    """Another worker's stalled-job sweep, run often: a lock that is not renewed in time
    is found at once (the job is re-queued, its finish then refused)."""

    def __init__(self, url: str, queue: str) -> None:
        self.q = Queue(queue, connect(url))
        self.ops = QueueOps(queue)
        self.stop = threading.Event()
        self.requeued: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        r = self.q.connection.sync()
        while not self.stop.is_set():
            r.delete(self.ops.keys.base + "stalled-check")  # the workers' own guard
            back, failed = self.q._run(self.ops.check_stalled(1, 50))
            self.requeued += back + failed
            time.sleep(0.1)

    def __enter__(self) -> _Sweeper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def test_gil_holding_child_keeps_its_lock_and_runs_once(fresh_server) -> None:
    url = fresh_server.url
    conn = connect(url)
    r = redis.Redis.from_url(url, decode_responses=True)
    q = Queue("gil", conn)
    n = _calibrate(4.0)  # four lock periods of GIL held by one C call
    w = Worker("gil", _gil_hog, conn, mode="process", concurrency=1, lock_duration=1000,
               stalled_interval=60_000)
    with _Sweeper(url, "gil") as sweeper, w:
        job = q.add({"type": "hog", "payload": {"url": url, "n": n}})
        assert job.result(timeout=120) == n * (n - 1) // 2
    assert sweeper.requeued == []
    assert len(r.lrange(f"runs:{job.id}", 0, -1)) == 1
    st = q.get_job_status(job.id)
    assert st.state is JobState.COMPLETED and st.attempts_made == 1
    assert check_states(r, "gil") == []


def test_timeout_kills_and_replaces_the_child_without_losing_other_jobs(fresh_server) -> None:
    url = fresh_server.url
    conn = connect(url)
    r = redis.Redis.from_url(url, decode_responses=True)
    q = Queue("gilt", conn)
    n = _calibrate(600.0)  # would hold the GIL for ~10 minutes
    w = Worker("gilt", _dispatch, conn, mode="process", concurrency=2, lock_duration=1000)
    with w:
        hog = q.add({"type": "hog", "payload": {"url": url, "n": n}}, timeout=2000)
        assert wait_until(lambda: r.llen(f"runs:{hog.id}") == 1, 60)
        hog_pid = int(r.lrange(f"runs:{hog.id}", 0, 0)[0])
        others = q.add_bulk([{"type": "q", "payload": {"url": url, "v": i}} for i in range(6)])
        with pytest.raises(JobFailedError) as err:
            hog.result(timeout=60)
        assert err.value.error_type == "timeout"
        assert [j.result(timeout=60) for j in others] == [2 * i for i in range(6)]
        assert wait_until(lambda: not alive(hog_pid), 10)
        # the replacement child takes work as before
        more = q.add_bulk([{"type": "q", "payload": {"url": url, "v": i}} for i in range(4)])
        assert [j.result(timeout=60) for j in more] == [0, 2, 4, 6]
    assert r.llen(f"runs:{hog.id}") == 1
    assert all(r.llen(f"runs:{j.id}") == 1 for j in others + more)
    assert check_states(r, "gilt") == []


def test_cancel_of_a_gil_holding_job_replaces_its_child(fresh_server) -> None:
    url = fresh_server.url
    conn = connect(url)
    r = redis.Redis.from_url(url, decode_responses=True)
    q = Queue("gilc", conn)
    n = _calibrate(600.0)
    w = Worker("gilc", _dispatch, conn, mode="process", concurrency=2)
    with w:
        hog = q.add({"type": "hog", "payload": {"url": url, "n": n}})
        assert wait_until(lambda: r.llen(f"runs:{hog.id}") == 1, 60)
        hog_pid = int(r.lrange(f"runs:{hog.id}", 0, 0)[0])
        assert hog.cancel() is True
        with pytest.raises(JobFailedError) as err:
            hog.result(timeout=60)
        assert err.value.error_type == "cancelled"
        assert wait_until(lambda: not alive(hog_pid), 10)
        others = q.add_bulk([{"type": "q", "payload": {"url": url, "v": i}} for i in range(4)])
        assert [j.result(timeout=60) for j in others] == [0, 2, 4, 6]
    assert Queue("dead_letter", conn).get_metrics().total == 0
    assert check_states(r, "gilc") == []


PROCS = """
import os, time
import redis

def slow(job):
    p = job.data["payload"]
    r = redis.Redis.from_url(p["url"])
    r.rpush("pids:" + job.id, os.getpid())
    time.sleep(p["sleep"])
    r.rpush("done:" + job.id, 1)
    return p["sleep"]
"""


def _cli_worker(url: str, queue: str, procs: Path, log: Path, grace: float,
                concurrency: int = 2) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = open(log, "ab")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-m", "nbqueue", "--url", url, "worker", queue,
                          "--mode", "process", "--concurrency", str(concurrency),
                          "--processor", f"{procs}:slow", "--grace", str(grace)],
                         stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    out.close()
    return p


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_to_process_mode_cli_finishes_jobs_and_leaves_no_child(
        fresh_server, tmp_path, sig) -> None:
    url = fresh_server.url
    r = redis.Redis.from_url(url, decode_responses=True)
    procs = tmp_path / "procs.py"
    procs.write_text(textwrap.dedent(PROCS))
    q = Queue("pterm", connect(url))
    jobs = q.add_bulk([{"type": "t", "payload": {"url": url, "sleep": 3}} for _ in range(2)])
    log = tmp_path / "w.log"
    w = _cli_worker(url, "pterm", procs, log, grace=20)
    try:
        assert wait_until(lambda: all(r.llen(f"pids:{j.id}") for j in jobs), 60), \
            log.read_text()
        pids = [int(r.lindex(f"pids:{j.id}", 0)) for j in jobs]
        extra = q.add({"type": "t", "payload": {"url": url, "sleep": 0}})
        w.send_signal(sig)
        w.wait(30)
    finally:
        kill_all([w])
    assert w.returncode == 0, log.read_text()
    assert [j.result(timeout=5) for j in jobs] == [3, 3]  # finished within the grace
    assert q.get_job_status(extra.id).state is JobState.WAITING  # no new work taken
    assert wait_until(lambda: not any(alive(p) for p in pids), 5), "a child outlived"
    assert check_states(r, "pterm") == []


def test_sigterm_hands_back_what_outlives_grace_and_kills_children(
        fresh_server, tmp_path) -> None:
    url = fresh_server.url
    r = redis.Redis.from_url(url, decode_responses=True)
    procs = tmp_path / "procs.py"
    procs.write_text(textwrap.dedent(PROCS))
    q = Queue("pterm2", connect(url))
    job = q.add({"type": "t", "payload": {"url": url, "sleep": 60}})
    log = tmp_path / "w.log"
    w = _cli_worker(url, "pterm2", procs, log, grace=1, concurrency=1)
    try:
        assert wait_until(lambda: r.llen(f"pids:{job.id}") == 1, 60), log.read_text()
        pid = int(r.lindex(f"pids:{job.id}", 0))
        w.send_signal(signal.SIGTERM)
        w.wait(30)
    finally:
        kill_all([w])
    assert w.returncode == 0, log.read_text()
    assert wait_until(lambda: not alive(pid), 5), "the child outlived its parent"
    st = q.get_job_status(job.id)
    assert st.state is JobState.WAITING and st.attempts_made == 0  # handed back
    assert r.llen(f"done:{job.id}") == 0
    assert check_states(r, "pterm2") == []


def test_sigkilled_parent_leaves_no_child(fresh_server, tmp_path) -> None:
    url = fresh_server.url
    r = redis.Redis.from_url(url, decode_responses=True)
    procs = tmp_path / "procs.py"
    procs.write_text(textwrap.dedent(PROCS))
    q = Queue("pkill", connect(url))
    job = q.add({"type": "t", "payload": {"url": url, "sleep": 60}})
    log = tmp_path / "w.log"
    w = _cli_worker(url, "pkill", procs, log, grace=1, concurrency=1)
    try:
        assert wait_until(lambda: r.llen(f"pids:{job.id}") == 1, 60), log.read_text()
        pid = int(r.lindex(f"pids:{job.id}", 0))
        w.send_signal(signal.SIGKILL)
        w.wait(10)
    finally:
        kill_all([w])
    assert wait_until(lambda: not alive(pid), 10), "the child outlived its killed parent"
