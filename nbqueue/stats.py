"""Per-batch counters the worker adds to a queue's Redis ``stats`` hash.

Redis is their source of truth, so totals are right however many threads, processes and
machines run workers; ``nbqueue.metrics`` turns them into Prometheus series.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

# Job duration histogram buckets, seconds (prometheus_client's defaults).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
                              2.5, 5.0, 7.5, 10.0)


# Wait-time histogram buckets, seconds: from add (or the end of a job's delay) to the start
# of its first attempt, as the fetch script measured it on the server clock
# (``JobRecord.wait_ms``). Counted with the durations: ``wait:<le>``, ``wait:inf``,
# ``wait_sum``.
WAIT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                   10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def wait_field(le: float) -> str:
    """The stats field of wait bucket ``le`` (``wait:0.005`` ... ``wait:3600``)."""
    return f"wait:{le:g}"


# The field names, made once (every finished job counts one of each kind).
_DUR_FIELDS: tuple[tuple[float, str], ...] = tuple((le, f"dur:{le}") for le in BUCKETS)
_WAIT_FIELDS: tuple[tuple[float, str], ...] = tuple((le, wait_field(le)) for le in WAIT_BUCKETS)


def record(stats: MutableMapping[str, Any], duration_s: float, error_type: str | None) -> None:
    """Count one finished attempt: its duration, and its error type if it failed."""
    # the (non-cumulative) bucket it falls in: dur:<le> or dur:inf
    for le, field in _DUR_FIELDS:
        if duration_s <= le:
            stats[field] += 1  # the count is the sum of the buckets
            break
    else:
        stats["dur:inf"] += 1
    stats["dur_sum"] += duration_s
    if error_type:
        stats[f"error:{error_type}"] += 1


def record_wait(stats: MutableMapping[str, Any], wait_ms: int) -> None:
    """Count one first attempt's wait (``JobRecord.wait_ms``; < 0: not a first attempt)."""
    if wait_ms < 0:
        return
    wait_s = wait_ms / 1000
    for le, field in _WAIT_FIELDS:
        if wait_s <= le:
            stats[field] += 1
            break
    else:
        stats["wait:inf"] += 1
    stats["wait_sum"] += wait_s
