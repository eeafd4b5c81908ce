"""The worker engine against a real Redis: modes, retries, timeouts, DLQ, locks, limits."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time

import pytest

from nbqueue import (
    JobFailedError,
    JobState,
    Queue,
    QueueManager,
    UnrecoverableError,
    Worker,
)
from nbqueue.worker.prefetch import AUTO_CAP_PER_SLOT

from .helpers import state_sets, wait_until


def _dead_letters(conn):
    return [j.data["payload"] for j in Queue("dead_letter", conn).get_jobs("waiting", 0, 100)]


def test_thread_worker_processes_and_returns_results(conn):
    q = Queue("w", conn)

    def proc(job):
        job.update_progress(50)
        return {"double": job.data["payload"] * 2}

    with Worker("w", proc, conn, concurrency=3):
        jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(30)])
        assert [j.result(timeout=10)["double"] for j in jobs] == [2 * i for i in range(30)]
    status = q.get_job_status(jobs[0].id)
    assert status.state is JobState.COMPLETED and status.progress == 50
    assert status.attempts_made == 1 and status.finished_on >= status.processed_on
    assert q.get_metrics().completed == 30


def test_async_processor_in_asyncio_mode(conn):
    q = Queue("a", conn)
    seen = []

    async def proc(job):
        await asyncio.sleep(0.01)
        await job.update_progress(100)
        seen.append(job.id)
        return job.data["payload"]

    w = Worker("a", proc, conn, concurrency=5, mode="asyncio").start()
    try:
        jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(20)])
        assert [j.result(timeout=10) for j in jobs] == list(range(20))
    finally:
        w.stop()
    assert len(seen) == 20 and not w.is_running


def _double(job):
    return job.data["payload"] * 2


def test_process_mode(conn):
    q = Queue("p", conn)
    w = Worker("p", _double, conn, concurrency=2, mode="process", processes=2).start()
    try:
        jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(10)])
        assert [j.result(timeout=60) for j in jobs] == [2 * i for i in range(10)]
    finally:
        w.stop()
    assert not w.is_running


def test_retries_with_exponential_backoff_then_dead_letter(conn, r):
    q = Queue("retry", conn)
    starts = []

    def proc(job):
        starts.append(time.monotonic())
        raise RuntimeError(f"boom {job.attempts_made}")

    with Worker("retry", proc, conn):
        job = q.add({"type": "flaky"}, attempts=4,
                    backoff={"type": "exponential", "delay": 100})
        with pytest.raises(JobFailedError, match="boom 3") as info:
            job.result(timeout=15)
    assert info.value.error_type == "RuntimeError"
    status = q.get_job_status(job.id)
    assert status.state is JobState.FAILED and status.attempts_made == 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 100, 200, 400 ms at least (never earlier than the backoff; later is allowed)
    assert len(gaps) == 3
    assert all(g >= want * 0.95 for g, want in zip(gaps, (0.1, 0.2, 0.4)))
    dl = wait_until(lambda: _dead_letters(conn), message="dead letter")
    assert dl[0]["queue"] == "retry" and dl[0]["job_id"] == job.id
    assert dl[0]["reason"] == "boom 3" and dl[0]["attempts_made"] == 4


def test_unrecoverable_and_success_false_fail_without_retry(conn):
    q = Queue("nr", conn)
    calls = []

    def proc(job):
        calls.append(job.name)
        if job.name == "unrec":
            raise UnrecoverableError("bad input")
        return {"success": False, "error": "PERMANENT_ERROR", "duration": 0}

    with Worker("nr", proc, conn):
        a = q.add({"type": "unrec"}, attempts=5)
        b = q.add({"type": "soft"}, attempts=5)
        with pytest.raises(JobFailedError, match="bad input"):
            a.result(timeout=10)
        with pytest.raises(JobFailedError, match="PERMANENT_ERROR"):
            b.result(timeout=10)
    assert sorted(calls) == ["soft", "unrec"]
    assert q.get_job_status(a.id).error_type == "unrecoverable"
    assert q.get_job_status(b.id).error_type == "returned_failure"
    wait_until(lambda: len(_dead_letters(conn)) == 2, message="two dead letters")


def test_timeout_is_an_error_type_and_retries(conn):
    q = Queue("to", conn)

    async def slow(job):
        await asyncio.sleep(5)

    with Worker("to", slow, conn, mode="asyncio"):
        job = q.add({"type": "slow"}, timeout=100, attempts=2)
        with pytest.raises(JobFailedError) as info:
            job.result(timeout=10)
    assert info.value.error_type == "timeout"
    assert q.get_job_status(job.id).attempts_made == 2


def test_sync_processor_timeout(conn):
    q = Queue("to2", conn)
    with Worker("to2", lambda job: time.sleep(1), conn):
        job = q.add({"type": "slow"}, timeout="100ms")
        with pytest.raises(JobFailedError, match="timeout"):
            job.result(timeout=10)


def test_result_timeout(conn):
    q = Queue("rt", conn)
    job = q.add({"type": "t"})
    with pytest.raises(TimeoutError):
        job.result(timeout=0.3)


def test_retention(conn, r):
    q = Queue("keep", conn, default_job_options={"remove_on_complete": 3})
    with Worker("keep", lambda job: 1, conn, concurrency=2):
        jobs = q.add_bulk([{"type": "t"} for _ in range(10)])
        extra = q.add({"type": "t"}, remove_on_complete=True)
        wait_until(lambda: q.get_metrics().total == 0)
        time.sleep(0.1)
    assert q.get_metrics().completed == 3
    assert len(r.keys("nbq:{keep}:job:*")) == 3
    assert q.get_job(extra.id) is None and q.get_job(jobs[0].id) is None


def test_events_stream(conn):
    q = Queue("ev", conn)
    last, _ = q.read_events("$")
    with Worker("ev", lambda job: job.update_progress(10), conn):
        job = q.add({"type": "t"})
        job.result(timeout=10)
    _, events = q.read_events(last)
    names = [e.event for e in events if e.job_id == job.id]
    for expected in ("added", "active", "progress", "completed"):
        assert expected in names
    assert names.index("added") < names.index("active") < names.index("completed")
    # the fetch that took the last waiting job also says the queue ran dry, after "active"
    order = [(e.event, e.job_id) for e in events]
    assert order.index(("drained", None)) == order.index(("active", job.id)) + 1


def test_global_rate_limit_across_two_workers(conn, r):
    q = Queue("rl", conn, rate_limiter={"max": 3, "duration": 500})
    r_key = "starts"

    def proc(job):
        r.rpush(r_key, time.time())

    q.add_bulk([{"type": "t"} for _ in range(9)])
    w1 = Worker("rl", proc, conn, concurrency=5).start()
    w2 = Worker("rl", proc, conn, concurrency=5).start()
    try:
        wait_until(lambda: q.get_metrics().completed == 9, timeout=20)
    finally:
        w1.stop()
        w2.stop()
    starts = sorted(float(x) for x in r.lrange(r_key, 0, -1))
    # 9 jobs at 3 per 500 ms window take at least two full windows after the first start.
    assert starts[-1] - starts[0] >= 0.95
    # no window of 500 ms holds more than 3 starts (fixed windows; allow clock jitter)
    for i in range(len(starts) - 3):
        assert starts[i + 3] - starts[i] >= 0.45


def test_pause_stops_new_work_and_resume_restarts(conn):
    q = Queue("pz", conn)
    q.pause()
    with Worker("pz", lambda job: 1, conn):
        q.add({"type": "t"})
        time.sleep(0.5)
        assert q.get_metrics().waiting == 1
        q.resume()
        wait_until(lambda: q.get_metrics().completed == 1)


def test_delayed_job_runs_when_due_not_before(conn):
    q = Queue("dl", conn)
    ran = []
    with Worker("dl", lambda job: ran.append(time.time()), conn):
        t0 = time.time()
        job = q.add({"type": "t"}, delay=400)
        job.result(timeout=10)
    assert ran[0] - t0 >= 0.39


def test_graceful_stop_finishes_active_job(conn):
    q = Queue("gs", conn)
    started = threading.Event()

    def proc(job):
        started.set()
        time.sleep(0.5)
        return "done"

    w = Worker("gs", proc, conn).start()
    job = q.add({"type": "t"})
    # Running, not just locked: a job fetched but not yet started when stop() comes is
    # handed back to the queue instead, without counting an attempt.
    assert started.wait(10)
    w.stop()
    assert q.get_job_status(job.id).state is JobState.COMPLETED


def test_stop_after_grace_hands_job_back(conn):
    q = Queue("gr", conn)
    w = Worker("gr", lambda job: time.sleep(3), conn, grace=0.2).start()
    job = q.add({"type": "t"})
    wait_until(lambda: q.get_metrics().active == 1)
    w.stop()
    st = q.get_job_status(job.id)
    assert st.state is JobState.WAITING and st.attempts_made == 0


def _slow_first_run(job):
    import redis as _redis

    r = _redis.Redis.from_url(os.environ["NBQ_TEST_URL"], decode_responses=True)
    runs = r.incr(f"runs:{job.id}")
    r.rpush("pids", os.getpid())
    if runs == 1:
        time.sleep(60)
    return runs


def test_sigkilled_worker_loses_no_job(conn, r, redis_url, monkeypatch):
    monkeypatch.setenv("NBQ_TEST_URL", redis_url)
    q = Queue("kill", conn)
    # a killed child fails its attempt at once (issue 21 item 2): the retry runs it again
    job = q.add({"type": "t"}, attempts=2)
    w = Worker("kill", _slow_first_run, conn, mode="process", processes=1,
               lock_duration=1000, stalled_interval=500).start()
    pid = int(wait_until(lambda: r.lindex("pids", 0), timeout=30, message="child started"))
    os.kill(pid, signal.SIGKILL)
    w.stop(timeout=1)
    rescuer = Worker("kill", _slow_first_run, conn, lock_duration=1000,
                     stalled_interval=500).start()
    try:
        assert job.result(timeout=20) == 2
    finally:
        rescuer.stop()
    assert r.get(f"runs:{job.id}") == "2"
    assert state_sets(r, "kill")["active"] == set()


def test_stalled_too_often_fails_into_dead_letter(conn, r):
    q = Queue("st", conn)
    job = q.add({"type": "t"})
    # A "worker" that takes the job and dies (never renews): the fetch op alone.
    q._run(q._ops.fetch(1, "ghost", 100))
    time.sleep(0.2)
    with Worker("st", lambda job: 1, conn, max_stalled_count=0, stalled_interval=200):
        with pytest.raises(JobFailedError, match="stalled"):
            job.result(timeout=10)
        wait_until(lambda: _dead_letters(conn), message="dead letter")
    assert q.get_job_status(job.id).error_type == "stalled"


def test_lost_lock_outcome_is_dropped(conn, r):
    q = Queue("ll", conn)
    job = q.add({"type": "t"})
    fetched = q._run(q._ops.fetch(1, "w1", 30_000)).jobs[0]
    r.hset("nbq:{ll}:job:" + job.id, "lk", "someone-else")
    from nbqueue.ops import Outcome, OutcomeKind

    done = [Outcome(fetched, OutcomeKind.COMPLETED, "1")]
    oks, _ = q._run(q._ops.finish(done, {}, 0, "w1", 30_000))
    assert oks == [False]
    assert q.get_job_status(job.id).state is JobState.ACTIVE


def test_retry_failed_jobs(conn):
    mgr = QueueManager(connection=conn)
    mgr.get_queue("rf")
    state = {"fail": True}

    def proc(job):
        if state["fail"]:
            raise ValueError("nope")
        return "ok"

    mgr.register_processor("rf", proc)
    mgr.start_worker("rf", worker_concurrency=2)
    try:
        jobs = mgr.add_jobs("rf", [{"type": "t"} for _ in range(4)])
        wait_until(lambda: mgr.get_queue_metrics("rf").failed == 4)
        state["fail"] = False
        assert mgr.retry_failed_jobs("rf") == 4
        assert [j.result(timeout=10) for j in jobs] == ["ok"] * 4
        assert mgr.get_job_status("rf", jobs[0].id).attempts_made == 1
    finally:
        mgr.close()


def test_start_worker_is_idempotent(conn):
    mgr = QueueManager(connection=conn)
    mgr.get_queue("idem")

    def proc(job):
        return 1

    mgr.register_processor("idem", proc)
    w1 = mgr.start_worker("idem")
    with pytest.warns(UserWarning, match="already running"):
        w2 = mgr.start_worker("idem")
    assert w1 is w2
    mgr.close()
    assert not w1.is_running


def test_seed_basic_queue_usage(conn):
    """The seed's "Basic Queue Usage", in Python (as in the README)."""
    from nbqueue import QueueManager

    queue_manager = QueueManager(connection=conn)
    queue = queue_manager.get_queue(name="my_queue", worker_concurrency=5)

    def process_data(payload):
        return sum(payload["data"])

    def processor(job):
        print(f"Processing job {job.id}")
        result = process_data(job.data["payload"])
        return {"success": True, "data": result,
                "duration": int(time.time() * 1000) - job.timestamp}

    queue_manager.register_processor("my_queue", processor)
    worker = queue_manager.start_worker(name="my_queue", worker_concurrency=5)
    job = queue_manager.add_job("my_queue", {
        "type": "process_data", "payload": {"data": [1, 2, 3]}, "user_id": "user123"})
    print(f"Job queued: {job.id}")
    assert job.result(timeout=10)["data"] == 6
    status = queue_manager.get_job_status("my_queue", job.id)
    assert status.state == "completed" and status.returnvalue["success"] is True
    worker.stop()
    assert queue.get_metrics().completed == 1


# -- prefetch="auto" (nbqueue/worker/prefetch.py) --------------------------------------------
def _max_active_while(q, r, until):
    """The most jobs seen active (locked by the worker) until ``until()``."""
    most = 0
    deadline = time.monotonic() + 60
    while not until() and time.monotonic() < deadline:
        most = max(most, r.zcard(f"nbq:{{{q.name}}}:active"))
        time.sleep(0.005)
    return most


def test_auto_prefetch_holds_short_jobs_not_long_ones(conn, r):
    long_q = Queue("long", conn)
    long_q.add_bulk([{"i": i} for i in range(8)])
    with Worker("long", lambda job: time.sleep(0.15), conn, concurrency=2):
        # 150 ms bodies, a backlog: a round trip is far shorter, so nothing is held back
        # from other workers (before "auto": the same, prefetch was 0)
        most = _max_active_while(long_q, r, lambda: long_q.get_metrics().completed == 8)
    assert most == 2, most
    short_q = Queue("short", conn)
    short_q.add_bulk([{"i": i} for i in range(3000)])
    with Worker("short", lambda job: None, conn, concurrency=2) as w:
        most = _max_active_while(short_q, r, lambda: short_q.get_metrics().waiting == 0)
        assert w.engine is not None
    assert most > 2, most  # no-op bodies on a deep queue: extra jobs held, locked
    assert short_q.get_metrics().completed + short_q.get_metrics().active <= 3000
    assert w.engine.jobs.prefetch.value <= 2 * AUTO_CAP_PER_SLOT


def _echo_payload(job):
    return job.payload


@pytest.mark.parametrize("mode", ["thread", "asyncio", "process"])
def test_data_is_decoded_by_the_body_and_bad_data_fails_as_corrupt(conn, r, mode):
    """A worker's fetch keeps each job's data as JSON text; the job's body decodes it (a
    process-mode parent hands the text on). Data that is not a JSON object fails the job
    unrun, as ``corrupt``, and dead-letters it, in every mode."""
    q = Queue("lazy", conn)
    good = q.add({"type": "t", "payload": {"k": [1, "é"]}})
    bad = q.add({"type": "t", "payload": 2})
    r.hset(f"nbq:{{lazy}}:job:{bad.id}", "data", "{not json")
    ran = []

    async def aproc(job):
        ran.append(job.id)
        return job.payload

    processor = aproc if mode == "asyncio" else _echo_payload
    with Worker("lazy", processor, conn, mode=mode, processes=1):
        assert good.result(timeout=30) == {"k": [1, "é"]}
        assert wait_until(lambda: q.get_job_status(bad.id).state.value == "failed", 30)
    status = q.get_job_status(bad.id)
    assert status.error_type == "corrupt" and "corrupt job hash" in status.failed_reason
    assert status.attempts_made <= 1 and bad.id not in ran
    dead = Queue("dead_letter", conn).get_jobs("waiting", limit=100)
    assert [d.data["payload"]["data"] for d in dead
            if d.data["payload"]["job_id"] == bad.id] == [{"raw": "{not json"}]
