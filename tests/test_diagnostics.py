"""Failure diagnostics and job logs: tracebacks per failed attempt, job.log, captured
print/logging output in every mode, caps, and removal with the job."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import pytest

from nbqueue import JobFailedError, Queue, Worker
from nbqueue.ops import QueueOps

from .helpers import wait_until

MODES = ["thread", "asyncio", "process"]
request_cleanup: list = []


@pytest.fixture(autouse=True)
def _cleanup():
    yield
    while request_cleanup:
        request_cleanup.pop()()


def test_job_log_outside_a_worker_and_reading_it(conn) -> None:
    q = Queue("lg", conn)
    job = q.add({"type": "t"})
    job.log("first")
    job.log({"not": "a str"})
    assert job.get_logs() == ["first", "{'not': 'a str'}"]
    assert q.get_job_logs(job.id) == ["first", "{'not': 'a str'}"]
    assert q.get_job_logs("no-such-job") == []


def test_logs_are_capped_and_lines_cut(conn) -> None:
    q = Queue("lg", conn)
    job = q.add({"type": "t"})
    ops = QueueOps("lg")
    q._run(ops.append_logs({job.id: [f"line {i}" for i in range(30)]}, cap=10))
    assert q.get_job_logs(job.id) == [f"line {i}" for i in range(20, 30)]
    job.log("x" * 25_000)
    last = q.get_job_logs(job.id)[-1]
    assert last.startswith("[15000 chars cut] ") and len(last) < 10_100


def test_logs_go_with_their_job(conn, r) -> None:
    q = Queue("lg", conn)
    removed, drained, cleaned, kept = (q.add({"type": "t"}) for _ in range(4))
    for job in (removed, drained, cleaned, kept):
        job.log("hello")
    assert q.remove(removed.id)
    assert r.exists(f"nbq:{{lg}}:logs:{removed.id}") == 0
    q.cancel(cleaned.id)  # failed now: clean removes it
    assert q.clean(0, 0, "failed") == 1
    assert r.exists(f"nbq:{{lg}}:logs:{cleaned.id}") == 0
    assert q.drain() == 2
    assert r.exists(f"nbq:{{lg}}:logs:{drained.id}") == 0
    # lines for a job that does not exist are dropped, not stored
    q.add({"type": "t"}).log("x")
    ops = QueueOps("lg")
    assert q._run(ops.append_logs({"ghost": ["boo"]})) == 0
    assert r.exists("nbq:{lg}:logs:ghost") == 0
    q.obliterate()
    assert not [k for k in r.keys("*") if "logs:" in k]


def test_logs_aio(conn) -> None:
    from nbqueue.aio import Queue as AQueue

    async def main() -> None:
        q = AQueue("lg2", conn)
        job = await q.add({"type": "t"})
        await job.log("one")
        assert await job.get_logs() == ["one"]
        assert await q.get_job_logs(job.id) == ["one"]
        await q.close()

    asyncio.run(main())


# -- tracebacks, from real workers in every mode ---------------------------------------------
def _lookup_price(row):
    return row["price"]


def _fails(job):
    return _lookup_price(job.data["payload"])


async def _fails_async(job):
    return _fails(job)


def _proc(mode, sync_fn, async_fn):
    return async_fn if mode == "asyncio" else sync_fn


@pytest.mark.parametrize("mode", MODES)
def test_traceback_per_failed_attempt_and_remote_traceback(conn, mode) -> None:
    q = Queue(f"tb-{mode}", conn)
    with Worker(q.name, _proc(mode, _fails, _fails_async), conn, mode=mode):
        job = q.add({"type": "t", "payload": {"qty": 1}}, attempts=2)
        with pytest.raises(JobFailedError) as err:
            job.result(timeout=60)
    st = q.get_job_status(job.id)
    assert st.error_type == "KeyError" and len(st.stacktrace) == 2  # one per attempt
    for trace in st.stacktrace:
        assert trace.startswith("Traceback (most recent call last):")
        assert "_lookup_price" in trace and 'return row["price"]' in trace
        assert trace.rstrip().endswith("KeyError: 'price'")
        assert "_run_thread" not in trace and "_run_async" not in trace  # the runner's frame
    e = err.value
    assert e.remote_traceback == st.stacktrace[-1] and e.error_type == "KeyError"
    assert str(e).startswith(f"job {job.id} failed: 'price'")
    assert str(e).rstrip().endswith("KeyError: 'price'")  # readable where a cell raises it
    assert q.get_job(job.id).stacktrace == st.stacktrace
    frame = q.jobs_frame("failed", columns="all")
    assert frame.loc[job.id, "last_error"] == "KeyError: 'price'"


def _deep(n):
    if n == 0:
        raise ValueError("bottom")
    return _deep(n - 1)


def _fails_deep(job):
    return _deep(500)


def test_tracebacks_are_truncated_and_bounded(conn, r) -> None:
    q = Queue("tb-deep", conn)
    with Worker(q.name, _fails_deep, conn):
        job = q.add({"type": "t"}, attempts=12)
        with pytest.raises(JobFailedError):
            job.result(timeout=60)
    st = q.get_job_status(job.id)
    assert st.attempts_made == 12 and len(st.stacktrace) == 10  # the newest 10 attempts
    trace = st.stacktrace[-1]
    assert len(trace) <= 8_100 and trace.rstrip().endswith("ValueError: bottom")
    assert 'raise ValueError("bottom")' in trace  # the newest frames are the ones kept
    assert trace.count("in _deep") <= 30
    q.remove(job.id)
    assert not [k for k in r.keys("*") if f":job:{job.id}" in k or f"logs:{job.id}" in k]


def test_frames_last_error_for_plain_and_returned_failures(conn) -> None:
    q = Queue("tb-frame", conn)

    def proc(job):
        return {"success": False, "error": "no stock"} if job.name == "bad" else 1

    with Worker(q.name, proc, conn):
        ok = q.add({"type": "ok"})
        bad = q.add({"type": "bad"})
        with pytest.raises(JobFailedError):
            bad.result(timeout=30)
        ok.result(timeout=30)
    frame = q.jobs_frame(columns=["state", "last_error"])
    assert frame.loc[bad.id, "last_error"] == "returned_failure: no stock"
    assert frame.loc[ok.id, "last_error"] is None


# -- logs and captured output, from real workers in every mode --------------------------------
def _chatty(job):
    print(f"printed by {job.id}")
    print("no newline at the end", end="")
    sys.stderr.write(f"stderr of {job.id}\n")
    logging.getLogger("user.code").warning("logged by %s", job.id)
    job.log(f"explicit {job.id}")
    return "ok"


async def _chatty_async(job):
    return _chatty(job)


@pytest.mark.parametrize("mode", MODES)
def test_print_logging_and_job_log_captured_per_job(conn, mode, capsys) -> None:
    # logging as a notebook user sets it up (basicConfig-style: a handler writing to
    # stderr), made before the worker starts; pytest's own capture handler is bypassed
    user = logging.getLogger("user.code")
    handler = logging.StreamHandler()
    user.addHandler(handler)
    user.propagate = False
    request_cleanup.append(lambda: (user.removeHandler(handler),
                                    setattr(user, "propagate", True)))
    q = Queue(f"out-{mode}", conn)
    with Worker(q.name, _proc(mode, _chatty, _chatty_async), conn, mode=mode,
                concurrency=2):
        jobs = q.add_bulk([{"type": "t"} for _ in range(4)])
        assert [j.result(timeout=60) for j in jobs] == ["ok"] * 4
        for job in jobs:
            logs = wait_until(lambda j=job: len(j.get_logs()) >= 5 and j.get_logs(), 30)
            assert f"printed by {job.id}" in logs
            assert f"stderr of {job.id}" in logs
            assert f"explicit {job.id}" in logs
            assert "no newline at the end" in logs
            assert any(f"logged by {job.id}" in line for line in logs)
            assert not any(f"by {other.id}" in line for other in jobs if other is not job
                           for line in logs)  # each job has only its own output
    out, err = capsys.readouterr()
    assert "printed by" not in out and "stderr of" not in err and "logged by" not in err


def _two_phase(job):
    for i in range(50):
        print(f"{job.id}:{i}")
        time.sleep(0.002)
    return None


def test_thread_mode_output_is_per_thread_not_a_global_swap(conn, capsys) -> None:
    q = Queue("out-iso", conn)
    with Worker(q.name, _two_phase, conn, concurrency=3):
        jobs = q.add_bulk([{"type": "t"} for _ in range(3)])
        for i in range(20):  # the "notebook" prints meanwhile, on its own thread
            print(f"main thread {i}")
            time.sleep(0.005)
        for j in jobs:
            j.result(timeout=30)
    for j in jobs:
        assert wait_until(lambda j=j: j.get_logs() == [f"{j.id}:{i}" for i in range(50)], 30)
    out, _ = capsys.readouterr()
    assert out.count("main thread") == 20 and ":49" not in out


def _floods(job):
    for i in range(1500):
        job.log(f"line {i}")


def _silent(job):
    return 1


def test_worker_logs_capped_and_nothing_logged_costs_no_key(conn, r) -> None:
    q = Queue("out-cap", conn)
    with Worker(q.name, _floods, conn):
        job = q.add({"type": "t"})
        job.result(timeout=30)
    logs = wait_until(lambda: len(q.get_job_logs(job.id)) == 1000 and q.get_job_logs(job.id))
    assert logs[0] == "line 500" and logs[-1] == "line 1499"
    with Worker("out-quiet", _silent, conn):
        quiet = Queue("out-quiet", conn).add({"type": "t"})
        quiet.result(timeout=30)
    assert not [k for k in r.keys("nbq:{out-quiet}:logs:*")]


def test_logs_magic(conn, r) -> None:
    from IPython.core.getipython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    ip = get_ipython() or start_ipython()
    ip.run_line_magic("load_ext", "nbqueue")
    q = Queue("mlogs", conn)
    job = q.add({"type": "t"})
    job.log("hello from the job")
    shown = ip.run_line_magic("nbqueue", f"logs mlogs {job.id}")
    assert "hello from the job" in str(shown)
