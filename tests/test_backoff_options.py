"""Backoff strategies, option validation and custom retry delays."""

from __future__ import annotations

from datetime import timedelta

import pytest

from nbqueue import InvalidOptionError, JobFailedError, Queue, Worker
from nbqueue.backoff import Backoff
from nbqueue.options import JobOptions, Retention, merge_options


def test_exponential_and_fixed_delays():
    exp = Backoff.parse({"type": "exponential", "delay": 1000})
    assert [exp.compute(n, RuntimeError(), None) for n in (1, 2, 3, 4)] == [1000, 2000, 4000,
                                                                             8000]
    fixed = Backoff.parse({"type": "fixed", "delay": "2s"})
    assert fixed.compute(3, RuntimeError(), None) == 2000
    assert Backoff.parse(500).delay == 500
    assert Backoff.parse(timedelta(seconds=1)).delay == 1000


def test_jitter_stays_within_bounds():
    b = Backoff.parse({"type": "exponential", "delay": 1000, "jitter": 0.5})
    values = {b.compute(2, RuntimeError(), None) for _ in range(200)}
    assert all(1000 <= v <= 2000 for v in values) and len(values) > 10


def test_bad_backoff_and_retention_options():
    for bad in ({"type": "linear"}, {"delay": -1}, {"type": "fixed", "jitter": 2},
                {"type": "fixed", "delai": 3}, True, [1]):
        with pytest.raises(InvalidOptionError):
            Backoff.parse(bad)
    assert Retention.parse(True, 1000) == Retention(count=0)
    assert Retention.parse({"age": 3600, "count": 10}, 1000) == Retention(10, 3_600_000)
    with pytest.raises(InvalidOptionError):
        Retention.parse({"age": 1, "keep": 2}, 1000)
    with pytest.raises(InvalidOptionError):
        Retention.parse(-3, 1000)
    with pytest.raises(InvalidOptionError):
        merge_options(JobOptions(), {"remove_on_complete": "yes"})


def test_custom_backoff_callable_end_to_end(conn):
    seen = []

    def my_backoff(attempts_made, error, job):
        seen.append((attempts_made, str(error)))
        return 50 * attempts_made

    q = Queue("cb", conn)

    def proc(job):
        raise KeyError("missing")

    with Worker("cb", proc, conn):
        job = q.add({"type": "t"}, attempts=3, backoff=my_backoff)
        with pytest.raises(JobFailedError):
            job.result(timeout=10)
    assert [a for a, _ in seen] == [1, 2]
    assert q.get_job_status(job.id).attempts_made == 3


def test_worker_backoff_strategy_for_custom_type(conn):
    calls = []

    def strategy(attempts_made, error, job):
        calls.append(attempts_made)
        return 10

    q = Queue("cb2", conn)
    with Worker("cb2", lambda job: 1 / 0, conn, backoff_strategy=strategy):
        job = q.add({"type": "t"}, attempts=2, backoff={"type": "custom"})
        with pytest.raises(JobFailedError, match="division"):
            job.result(timeout=10)
    assert calls == [1]


def test_worker_option_validation(conn):
    with pytest.raises(InvalidOptionError, match="mode"):
        Worker("x", print, conn, mode="fork")
    with pytest.raises(InvalidOptionError, match="concurrency"):
        Worker("x", print, conn, concurrency=0)
    with pytest.raises(TypeError, match="callable"):
        Worker("x", "print", conn)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="rate_limiter"):
        Queue("x", conn, rate_limiter={"max": 0, "duration": 1000})
    with pytest.raises(InvalidOptionError, match="job_id cannot"):
        Queue("x", conn, default_job_options={"job_id": "a"})


@pytest.mark.parametrize("priority", ["\u00b2", "\u0663", "1\u00b2"])
def test_priority_with_non_ascii_digits_is_an_option_error(conn, priority):  # type: ignore[no-untyped-def]
    """Found by the hostile-input test: '²'.isdigit() is True but int('²') raises ValueError."""
    q = Queue("opt-digits", conn)
    with pytest.raises(InvalidOptionError, match="priority"):
        q.add({"type": "t"}, priority=priority)
    assert q.get_metrics().total == 0
