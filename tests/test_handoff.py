"""Direct hand-off: a parked (idle) worker gets a new job from the producer's add script,
without a fetch; everything else (priority, pause, limits, crashes, stop) is unchanged."""

from __future__ import annotations

import time

import redis

from nbqueue import Queue, Worker
from nbqueue.connection import Connection
from nbqueue.protocol import run_sync

from .helpers import wait_until

IDLE = "nbq:{ho}:idle"


def _handed(q: Queue, job_id: str) -> bool:
    """True if the job's `added` and `active` events share one stream entry (add.lua)."""
    _, events = q.read_events("0-0")
    entries = {e.event: e.id for e in events if e.job_id == job_id}
    return "added" in entries and entries.get("active") == entries["added"]


def test_parked_worker_gets_the_job_from_add(conn: Connection, r: redis.Redis) -> None:
    q = Queue("ho", conn)
    with Worker("ho", lambda job: job.data["payload"] * 2, conn, concurrency=2):
        assert wait_until(lambda: r.zcard(IDLE) == 1)  # parked, blocked on its hand-off list
        for i in range(5):
            job = q.add({"type": "t", "payload": i})
            assert job.result(timeout=10) == 2 * i
            assert _handed(q, job.id)
            assert wait_until(lambda: r.zcard(IDLE) == 1)  # parked again after each job
        status = q.get_job_status(job.id)
        assert status.attempts_made == 1 and status.processed_on is not None
    # stopping leaves the registry: nothing can be handed to a gone worker
    assert r.zcard(IDLE) == 0
    assert not r.keys("nbq:{ho}:h:*")
    _, events = q.read_events("0-0")
    names = [e.event for e in events if e.job_id == job.id]
    assert names == ["added", "active", "completed"]


def test_no_handoff_while_jobs_wait_or_queue_paused(conn: Connection, r: redis.Redis) -> None:
    """Jobs already waiting go first: a parked worker is not handed the newest one."""
    q = Queue("ho", conn)
    order: list[str] = []
    with Worker("ho", lambda job: order.append(job.data["type"]), conn, concurrency=1):
        assert wait_until(lambda: r.zcard(IDLE) == 1)
        q.pause()
        low = q.add({"type": "low"}, priority="low")
        high = q.add({"type": "high"}, priority="high")
        assert q.get_job_status(low.id).state.value == "paused"  # not handed over
        assert r.zcard(IDLE) == 1  # the registration was put back
        q.resume()
        assert wait_until(lambda: len(order) == 2)
        assert order == ["high", "low"]  # strict priority, as if no worker had been parked
        assert not _handed(q, high.id)


def test_job_handed_to_a_dead_worker_is_recovered(conn: Connection, r: redis.Redis) -> None:
    """A worker that died while parked: its registration still looks fresh, so the job is
    handed to it; the lock (1 s here) expires and the stalled sweep gives it to a live one."""
    q = Queue("ho", conn)
    r.zadd(IDLE, {"ghost-1|1000": int(time.time() * 1000) + 60_000})
    job = q.add({"type": "t", "payload": 21})
    assert q.get_job_status(job.id).state.value == "active"
    assert r.llen("nbq:{ho}:h:ghost-1") == 1 and 0 < r.pttl("nbq:{ho}:h:ghost-1") <= 1000
    with Worker("ho", lambda job: job.data["payload"] * 2, conn, stalled_interval=300):
        assert job.result(timeout=15) == 42
    assert q.get_job_status(job.id).attempts_made == 1


def test_expired_registration_is_not_used(conn: Connection, r: redis.Redis) -> None:
    q = Queue("ho", conn)
    r.zadd(IDLE, {"ghost-2|30000": int(time.time() * 1000) - 1})
    job = q.add({"type": "t"})
    assert q.get_job_status(job.id).state.value == "waiting"
    assert r.zcard(IDLE) == 0 and r.llen("nbq:{ho}:h:ghost-2") == 0


def test_bulk_and_delayed_adds_take_the_usual_path(conn: Connection, r: redis.Redis) -> None:
    q = Queue("ho", conn)
    r.zadd(IDLE, {"ghost-3|30000": int(time.time() * 1000) + 60_000})
    jobs = q.add_bulk([{"type": "a"}, {"type": "b"}])
    later = q.add({"type": "c"}, delay=60_000)
    assert [q.get_job_status(j.id).state.value for j in jobs] == ["waiting", "waiting"]
    assert q.get_job_status(later.id).state.value == "delayed"
    assert r.zcard(IDLE) == 1 and r.llen("nbq:{ho}:h:ghost-3") == 0


def test_a_park_takes_a_job_handed_before_it_and_stays_unregistered(
        conn: Connection, r: redis.Redis) -> None:
    """An add took a registration of ours whose BLPOP had already returned, and handed us
    its job; our next park (fetch + BLPOP, no unpark asked: we thought we were not
    registered) must take that job and leave no registration behind. It used to register
    again on top of it: a registration nobody blocked on, left there by a stop, so the next
    add handed its job to the stopped worker (run 30 s later, after the lock expired)."""
    q = Queue("ho", conn)
    r.zadd(IDLE, {"w-1|30000": int(time.time() * 1000) + 60_000})
    job = q.add({"type": "t"})  # handed to w-1: active, on its hand-off list
    assert r.llen("nbq:{ho}:h:w-1") == 1 and r.zcard(IDLE) == 0
    fetched, _ = run_sync(conn.sync(), q._ops.block_and_fetch(
        "nbq:{ho}:wake:w-1", 0.5, 2, "w-1", 30_000))
    assert [j.id for j in fetched.jobs] == [job.id]
    assert r.zrange(IDLE, 0, -1) == []  # not registered: nothing to hand to a busy worker
    assert r.llen("nbq:{ho}:h:w-1") == 0


def test_back_to_back_round_trips_then_a_new_worker(conn: Connection, r: redis.Redis) -> None:
    """``add().result()`` in a loop, stop the worker, start another (a notebook re-running
    its worker cell): the stopped worker is not in the idle registry, and the next job runs
    at once, not after the stopped worker's lock expires. Failed 8 runs in 10 before the
    fix (the job waited for the 30 s lock)."""
    q = Queue("ho", conn)
    for _ in range(3):
        worker = Worker("ho", lambda job: job.data["payload"] + 1, conn, concurrency=2)
        with worker:
            for i in range(50):
                assert q.add({"type": "t", "payload": i}).result(timeout=10) == i + 1
        assert worker.engine is not None
        token = worker.engine.token
        assert [m for m in r.zrange(IDLE, 0, -1) if m.startswith(token)] == []
    with Worker("ho", lambda job: job.data["payload"] + 1, conn, concurrency=2,
                lock_duration=60_000):
        assert q.add({"type": "t", "payload": 1}).result(timeout=20) == 2


def test_a_worker_going_idle_parks_with_its_finish(conn: Connection, r: redis.Redis) -> None:
    """``add().result()`` one after another: the finish that completes a job also registers
    the worker as idle (finish.lua, its BLPOP sent alongside), before the completion is
    written, so the next add finds it parked and hands the job over: no fetch script
    between two jobs. (Parked by a separate fetch after the finish's reply, the worker was
    usually too late: 17 jobs of 29 were queued, then fetched.) A park already in flight
    beside a finish (a job that ended while the worker was parking for its other slot) may
    still lose that race, rarely: seen once in a full run of the suite."""
    q = Queue("ho", conn)
    with Worker("ho", lambda job: job.data["payload"] + 1, conn, concurrency=2):
        jobs = []
        for i in range(30):
            if i in (10, 20):
                time.sleep(1.1)  # the worker's counters are due when the next job ends:
                # its finish carries them, and parks all the same
            job = q.add({"type": "t", "payload": i})
            assert job.result(timeout=10) == i + 1
            jobs.append(job)
    # (the first may come before the worker's first park)
    assert len([j.id for j in jobs[1:] if not _handed(q, j.id)]) <= 3
