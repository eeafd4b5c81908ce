"""``wait()`` on a queue with no live worker says so, from the worker registry (issue 19
item 7; DESIGN "Named, durable batches"). It used to say the jobs "keep running"."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import warnings
from typing import Any

import pytest

import nbqueue
from nbqueue import NoLiveWorkerWarning, Queue, ResultTimeoutError, Worker, aio, liveness


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(liveness, "GRACE_S", 0.2)


def test_batch_wait_without_a_worker_warns_and_says_so(conn) -> None:
    q = Queue("nobody_home", conn)
    batch = q.map([{"type": "t", "payload": i} for i in range(3)])
    with pytest.warns(NoLiveWorkerWarning, match="no live worker consumes queue "
                      "'nobody_home'"), pytest.raises(ResultTimeoutError) as info:
        batch.wait(timeout=1, progress=False)
    text = str(info.value)
    assert "3 of 3 job(s) not finished" in text
    assert "no live worker consumes queue 'nobody_home'" in text
    assert "queue_manager.start_worker('nobody_home')" in text
    assert "nbqueue worker nobody_home" in text
    assert "keep running" not in text


def test_job_result_without_a_worker_says_so(conn) -> None:
    q = Queue("nobody_result", conn)
    job = q.add({"type": "t"})
    with pytest.warns(NoLiveWorkerWarning), pytest.raises(ResultTimeoutError,
                                                        match="no live worker consumes"):
        job.result(timeout=2)  # (it blocks on the events stream 1 s at a time)


def test_aio_wait_without_a_worker_says_so(conn) -> None:
    async def main() -> None:
        q = aio.Queue("nobody_aio", conn)
        batch = await q.map([{"type": "t"}])
        with pytest.warns(NoLiveWorkerWarning), \
                pytest.raises(ResultTimeoutError, match="no live worker consumes"):
            await batch.wait(timeout=1, progress=False)

    asyncio.run(main())


def test_a_live_worker_that_is_busy_is_not_reported(conn) -> None:
    """A worker consumes the queue but the job outlasts the wait: the old words, no
    warning."""
    q = Queue("busy_home", conn)

    def slow(job: Any) -> None:
        time.sleep(3)

    with Worker(q.name, slow, conn):
        job = q.add({"type": "slow"})
        with warnings.catch_warnings():
            warnings.simplefilter("error", NoLiveWorkerWarning)
            with pytest.raises(ResultTimeoutError) as info:
                q.map([{"type": "slow"}]).wait(timeout=1, progress=False)
            assert "they keep running" in str(info.value)
            with pytest.raises(ResultTimeoutError, match="it keeps running"):
                job.result(timeout=0.5)


def test_a_killed_worker_process_stops_counting_once_its_registration_lapses(
        conn, redis_url: str) -> None:
    """A worker in another process consumes the queue; once it is SIGKILLed its
    registration lapses (ttl) and a wait says nobody consumes the queue."""
    code = ("import nbqueue, sys\n"
            "w = nbqueue.Worker('lapsed', lambda job: None, nbqueue.connect(sys.argv[1]),"
            " heartbeat_interval=300)\n"
            "w.run()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, redis_url],
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        q = Queue("lapsed", conn)
        deadline = time.monotonic() + 30
        while not q.get_workers():
            assert time.monotonic() < deadline, "the worker never registered"
            time.sleep(0.05)
        q.pause()  # the job waits: the worker is alive but takes nothing
        job = q.add({"type": "t"})
        with pytest.raises(ResultTimeoutError, match="it keeps running"):
            job.result(timeout=0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        while q.get_workers():
            assert time.monotonic() < deadline, "the registration never lapsed"
            time.sleep(0.1)
        with pytest.raises(ResultTimeoutError, match="no live worker consumes queue 'lapsed'"):
            job.result(timeout=0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        nbqueue.queue_manager.close()
