"""Queue operations against a real Redis: add, priorities, delays, control, bad input."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

import nbqueue
from nbqueue import (
    InvalidOptionError,
    JobPriority,
    JobState,
    PayloadTooLargeError,
    Queue,
    QueueMetrics,
    UnknownQueueError,
)

from .helpers import state_sets


@pytest.fixture
def q(conn):
    return Queue("q1", conn)


def test_add_and_status(q, r):
    job = q.add({"type": "process_data", "payload": {"data": [1, 2, 3]}, "user_id": "u1"})
    assert job.id == "1" and job.name == "process_data"
    status = q.get_job_status(job.id)
    assert status.state is JobState.WAITING and status.state == "waiting"
    assert status.data["payload"] == {"data": [1, 2, 3]}
    assert status.attempts_made == 0 and status.failed_reason is None
    assert r.hget("nbq:{q1}:job:1", "state") == "waiting"
    assert q.get_job_status("nope") is None


def test_metrics(q):
    q.add({"type": "a"})
    q.add({"type": "b"}, delay=60_000)
    m = q.get_metrics()
    assert m == QueueMetrics("q1", waiting=1, active=0, completed=0, failed=0, delayed=1,
                             paused=False, total=2)
    q.pause()
    assert q.get_metrics().paused is True
    assert q.get_job_status("1").state is JobState.PAUSED
    q.resume()
    assert q.get_metrics().paused is False


def test_strict_priority_fifo_within_level(q, conn):
    order = [3, 5, 1, 3, 2, 1, 4, 5, 2]
    for i, p in enumerate(order):
        q.add({"type": "t", "payload": {"i": i}}, priority=p)
    taken = []
    fetched = q._run(q._ops.fetch(100, "tok", 30_000))
    taken = [(j.priority, j.data["payload"]["i"]) for j in fetched.jobs]
    expected = sorted(((p, i) for i, p in enumerate(order)))
    assert taken == expected


def test_priority_names_and_enum(q):
    assert q.add({"type": "t"}, priority="high").priority == 2
    assert q.add({"type": "t"}, priority=JobPriority.CRITICAL).priority == 1
    assert q.add({"type": "t"}, priority="5").priority == 5
    with pytest.raises(InvalidOptionError, match="unknown priority"):
        q.add({"type": "t"}, priority="urgent")
    with pytest.raises(InvalidOptionError):
        q.add({"type": "t"}, priority=9)


def test_delayed_jobs_keep_priority_and_fifo_after_promotion(q, r):
    # Same due time for all: promoted jobs must still come out by priority, FIFO within.
    for i, p in enumerate([4, 2, 4, 2]):
        q.add({"type": "t", "payload": {"i": i}}, priority=p, delay=150)
    assert q._run(q._ops.fetch(10, "tok", 30_000)).jobs == []  # not due yet
    time.sleep(0.25)
    jobs = q._run(q._ops.fetch(10, "tok", 30_000)).jobs
    assert [j.data["payload"]["i"] for j in jobs] == [1, 3, 0, 2]


def test_delay_forms(q):
    assert q.add({"type": "t"}, schedule={"delay": 300_000}).state is JobState.DELAYED
    assert q.add({"type": "t"}, delay=timedelta(minutes=5))._record.delay == 300_000
    assert q.add({"type": "t"}, delay="2h")._record.delay == 7_200_000
    with pytest.raises(InvalidOptionError, match="negative"):
        q.add({"type": "t"}, delay=-5)
    with pytest.raises(InvalidOptionError):
        q.add({"type": "t"}, schedule={"cron": "* * * * *"})


def test_job_id_dedupe(q, r):
    a = q.add({"type": "t", "payload": 1}, job_id="report-2026")
    b = q.add({"type": "t", "payload": 2}, job_id="report-2026")
    assert a.id == b.id == "report-2026"
    assert b.data["payload"] == 1  # the existing job, not what was sent again
    assert q.get_metrics().waiting == 1
    with pytest.raises(InvalidOptionError, match="digits"):
        q.add({"type": "t"}, job_id="42")


def test_add_bulk_one_round_trip(q, r):
    r.config_resetstat()
    jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(500)], priority="low")
    assert len(jobs) == 500 and len({j.id for j in jobs}) == 500
    assert all(j.priority == 4 for j in jobs)
    stats = r.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] + stats.get("cmdstat_eval", {"calls": 0})[
        "calls"] == 1
    assert q.get_metrics().waiting == 500


def test_add_bulk_with_per_item_options(q):
    jobs = q.add_bulk([({"type": "a"}, {"priority": 1}), {"type": "b"}])
    assert [j.priority for j in jobs] == [1, 3]


def test_bad_input_is_refused_before_redis(q, r):
    with pytest.raises(TypeError, match=r"data\['payload'\]\['when'\] has type object"):
        q.add({"type": "t", "payload": {"when": object()}})
    with pytest.raises(TypeError, match="must be a dict"):
        q.add(["not", "a", "dict"])
    with pytest.raises(TypeError, match="JSON keys must be str"):
        q.add({"type": "t", "payload": {1: "x"}})
    with pytest.raises(InvalidOptionError, match="attempts"):
        q.add({"type": "t"}, attempts=0)
    with pytest.raises(InvalidOptionError, match="backoff type"):
        q.add({"type": "t"}, backoff={"type": "linear"})
    with pytest.raises(InvalidOptionError, match="unknown job option"):
        q.add({"type": "t"}, priorty=1)
    with pytest.raises(InvalidOptionError, match="timeout"):
        q.add({"type": "t"}, timeout=0)
    with pytest.raises(InvalidOptionError):
        q.add({"type": "t"}, delay="soon")
    assert r.dbsize() == 0  # nothing reached Redis


def test_payload_limits(conn, r):
    q = Queue("big", conn, max_payload_bytes=200_000)
    with pytest.warns(UserWarning, match="100 KB"):
        q.add({"type": "t", "payload": "x" * 150_000})
    with pytest.raises(PayloadTooLargeError, match="limit"):
        q.add({"type": "t", "payload": "x" * 250_000})
    assert q.get_metrics().waiting == 1
    with pytest.raises(PayloadTooLargeError):
        Queue("big2", conn).add({"type": "t", "payload": "y" * 1_100_000})


def test_bad_queue_names(conn):
    with pytest.raises(InvalidOptionError, match="braces"):
        Queue("a{b}", conn)
    with pytest.raises(InvalidOptionError):
        Queue("", conn)
    with pytest.raises(TypeError):
        Queue(3, conn)  # type: ignore[arg-type]


def test_pause_drain_clean_remove_obliterate(q, r):
    for i in range(5):
        q.add({"type": "t", "payload": i})
    q.add({"type": "later"}, delay=60_000)
    assert q.drain() == 5
    assert q.get_metrics().delayed == 1
    assert q.drain(delayed=True) == 1
    assert r.keys("nbq:{q1}:job:*") == []
    job = q.add({"type": "t"})
    assert q.remove(job.id) is True and q.remove(job.id) is False
    q.add({"type": "t"})
    assert q.obliterate() >= 1
    # all gone but the adds' idempotency tokens, which expire by themselves within minutes
    left = r.keys("nbq:{q1}:*")
    assert left and all(k.startswith("nbq:{q1}:add:") and 0 < r.pttl(k) <= 180_000
                        for k in left)


def test_keys_share_one_hash_slot(q, r):
    q.add({"type": "t"})
    q.add({"type": "t"}, delay=10_000)
    from redis.crc import key_slot

    keys = r.keys("nbq:{q1}:*")
    assert len(keys) >= 5
    assert len({key_slot(k.encode()) for k in keys}) == 1


def test_unreachable_redis_is_a_clear_connection_error():
    with pytest.raises(nbqueue.RedisUnavailableError) as info:
        nbqueue.connect("redis://user:s3cret@127.0.0.1:1/0")
    assert isinstance(info.value, ConnectionError)
    assert "127.0.0.1:1" in str(info.value) and "s3cret" not in str(info.value)


def test_manager_unknown_queue(conn):
    mgr = nbqueue.QueueManager(connection=conn)
    with pytest.raises(UnknownQueueError, match="get_queue"):
        mgr.add_job("never_created", {"type": "t"})
    mgr.get_queue("known")
    assert mgr.add_job("known", {"type": "t"}).id == "1"
    # predefined queues are known by name
    assert mgr.get_queue_metrics(nbqueue.QueueName.EMAIL).queue_name == "email"


def test_state_sets_consistent(q, r):
    q.add_bulk([{"type": "t"} for _ in range(3)])
    q.add({"type": "t"}, delay=50_000)
    sets = state_sets(r, "q1")
    assert sets["wait"] == {"1", "2", "3"} and sets["delayed"] == {"4"}
