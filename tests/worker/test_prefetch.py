"""``prefetch="auto"``: hold just enough short jobs to hide the fetch round trip (no Redis)."""

from __future__ import annotations

import pytest

from nbqueue import InvalidOptionError, Worker
from nbqueue.worker.prefetch import AUTO_CAP_PER_SLOT, Prefetch, check_prefetch


def test_nothing_is_held_before_a_job_duration_is_known() -> None:
    p = Prefetch("auto", 2)
    p.fetched(asked=2, got=2, seconds=0.001)
    assert p.value == 0


def test_short_jobs_on_a_deep_queue_hide_the_round_trip() -> None:
    p = Prefetch("auto", 2)
    p.job_done(0.0001)  # 100 µs bodies
    p.fetched(asked=2, got=2, seconds=0.0004)  # 400 µs round trip: 2 slots x 4 jobs
    assert p.value == 8
    for _ in range(50):  # a much slower round trip: capped per slot
        p.fetched(asked=10, got=10, seconds=0.05)
    assert p.value == AUTO_CAP_PER_SLOT * 2


def test_jobs_longer_than_a_round_trip_are_never_held_back() -> None:
    p = Prefetch("auto", 4)
    p.job_done(0.05)
    p.fetched(asked=4, got=4, seconds=0.002)
    assert p.value == 0


def test_a_queue_that_runs_dry_ends_the_prefetch() -> None:
    p = Prefetch("auto", 2)
    p.job_done(0.00002)
    p.fetched(asked=2, got=2, seconds=0.0005)
    assert p.value > 0
    p.fetched(asked=p.value + 2, got=3, seconds=0.0005)
    assert p.value == 0


def test_a_fixed_prefetch_stays_fixed() -> None:
    p = Prefetch(5, 2)
    p.job_done(10.0)
    p.fetched(asked=7, got=1, seconds=0.001)
    assert p.value == 5


@pytest.mark.parametrize("bad", [-1, "x", True, 1.5, None])
def test_a_bad_prefetch_is_refused(bad: object) -> None:
    with pytest.raises(InvalidOptionError, match="prefetch must be"):
        check_prefetch(bad)
    with pytest.raises(InvalidOptionError, match="prefetch must be"):
        Worker("q", lambda job: None, "redis://127.0.0.1:1/0", prefetch=bad)  # type: ignore[arg-type]
    assert check_prefetch("auto") == "auto" and check_prefetch(0) == 0
