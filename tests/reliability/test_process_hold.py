"""Process mode: each child holds its next job while it runs one (issue 18). A held job is
locked like a running one; its cancel ends it at once and it never starts; a child that
dies holding one loses nothing (the held job runs in another child); priority: a held job
was taken before a more urgent one added later (one job per child, documented)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import redis
from rhelpers import check_states, wait_until

from nbqueue import JobFailedError, JobPriority, JobState, Queue, Worker, connect

pytestmark = pytest.mark.reliability


def _proc(job: Any) -> str:
    """Records its start (and how many bodies run at once); blocks on ``block`` until the
    test sets ``<tag>:release``; ``crash`` kills its own child on the first run."""
    p = job.payload
    r = redis.Redis.from_url(p["url"], decode_responses=True)
    tag = p["tag"]
    r.rpush(f"{tag}:starts", job.id)
    r.rpush(f"{tag}:concurrent", r.incr(f"{tag}:running"))
    try:
        if p.get("crash") and r.incr(f"{tag}:runs:{job.id}") == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        if p.get("block"):
            deadline = time.monotonic() + 30
            while not r.get(f"{tag}:release") and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        r.decr(f"{tag}:running")
    return str(job.id)


def _held(q: Queue, job_id: str) -> bool:
    """The job is fetched (locked, active) though the only child is busy: held."""
    status = q.get_job_status(job_id)
    return status is not None and status.state is JobState.ACTIVE


def _job(url: str, tag: str, **extra: Any) -> dict[str, Any]:
    return {"type": "t", "payload": {"url": url, "tag": tag, **extra}}


def test_a_cancelled_held_job_never_starts_and_ends_at_once(r: redis.Redis, redis_url: str) -> None:
    q = Queue("hold-cancel", connect(redis_url))
    a = q.add(_job(redis_url, "hc", block=True))
    with Worker(q.name, _proc, q.connection, concurrency=1, mode="process"):
        assert wait_until(lambda: r.lrange("hc:starts", 0, -1) == [a.id], 30)
        b = q.add(_job(redis_url, "hc"))
        assert wait_until(lambda: _held(q, b.id), 10), "the busy child did not hold b"
        assert b.cancel() is True
        with pytest.raises(JobFailedError) as info:
            b.result(timeout=5)  # at once, while a still runs
        assert info.value.error_type == "cancelled"
        assert q.get_job_status(a.id).state is JobState.ACTIVE
        r.set("hc:release", 1)
        assert a.result(timeout=30) == a.id
        c = q.add(_job(redis_url, "hc"))  # the child goes on with other work
        assert c.result(timeout=30) == c.id
    assert r.lrange("hc:starts", 0, -1) == [a.id, c.id]  # b never started
    assert max(int(x) for x in r.lrange("hc:concurrent", 0, -1)) == 1
    assert check_states(r, q.name) == []


def test_a_child_that_dies_holding_a_next_job_loses_nothing(r: redis.Redis, redis_url: str) -> None:
    q = Queue("hold-crash", connect(redis_url))
    a = q.add(_job(redis_url, "hk", crash=True, block=True), attempts=2)
    with Worker(q.name, _proc, q.connection, concurrency=1, mode="process"):
        assert wait_until(lambda: r.lrange("hk:starts", 0, -1)[:1] == [a.id], 30)
        b = q.add(_job(redis_url, "hk"))
        r.set("hk:release", 1)  # a's second run (after its crash) returns at once
        # a's first run killed its child before b (held) could start: b runs in the next
        # child; a's attempt failed ("child killed by SIGKILL") and it runs again
        assert b.result(timeout=30) == b.id
        assert a.result(timeout=30) == a.id
    starts = r.lrange("hk:starts", 0, -1)
    assert starts.count(b.id) == 1 and starts.count(a.id) == 2
    assert check_states(r, q.name) == []


def test_priority_a_held_job_runs_before_a_more_urgent_one_added_later(
        r: redis.Redis, redis_url: str) -> None:
    """The documented caveat: a child holds one job, taken while it was busy; a CRITICAL
    job added after that waits behind it (one job), then goes first."""
    q = Queue("hold-prio", connect(redis_url))
    a = q.add(_job(redis_url, "hp", block=True))
    with Worker(q.name, _proc, q.connection, concurrency=1, mode="process"):
        assert wait_until(lambda: r.lrange("hp:starts", 0, -1) == [a.id], 30)
        low1 = q.add(_job(redis_url, "hp"), priority=JobPriority.LOW)
        assert wait_until(lambda: _held(q, low1.id), 10)
        low2 = q.add(_job(redis_url, "hp"), priority=JobPriority.LOW)
        urgent = q.add(_job(redis_url, "hp"), priority=JobPriority.CRITICAL)
        time.sleep(0.3)
        assert q.get_job_status(low2.id).state is JobState.WAITING  # one held job, no more
        assert q.get_job_status(urgent.id).state is JobState.WAITING
        r.set("hp:release", 1)
        for j in (a, low1, low2, urgent):
            assert j.result(timeout=30) == j.id
    assert r.lrange("hp:starts", 0, -1) == [a.id, low1.id, urgent.id, low2.id]
