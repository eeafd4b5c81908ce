"""rq: ``SimpleWorker`` (jobs run in the worker process, no fork per job; rq has no
in-process concurrency, so this is concurrency 1 by design)."""

from __future__ import annotations

import time
from typing import Any

import redis

from bench import jobs
from bench.peers import dist_version, missing

MODES = ("simple",)
ROLES = {"add_single", "add_bulk", "preload", "worker", "latency"}
QUEUE = "bench"


def skip_reason(role: str) -> str | None:
    return missing("rq", "rq")


def version() -> str | None:
    return dist_version("rq")


def _queue(url: str) -> Any:
    from rq import Queue

    return Queue(QUEUE, connection=redis.Redis.from_url(url))


def add_single(url: str, n: int) -> float:
    q = _queue(url)
    q.connection.ping()
    t = time.perf_counter()
    for _ in range(n):
        q.enqueue(jobs.incr_sync)
    return time.perf_counter() - t


def add_bulk(url: str, n: int) -> float:
    from rq import Queue

    q = _queue(url)
    q.connection.ping()
    t = time.perf_counter()
    for s in range(0, n, 1000):
        q.enqueue_many([Queue.prepare_data(jobs.incr_sync) for _ in range(s, min(n, s + 1000))])
    return time.perf_counter() - t


def preload(url: str, n: int) -> None:
    add_bulk(url, n)


def worker(url: str, mode: str) -> None:
    from rq import SimpleWorker

    q = _queue(url)
    SimpleWorker([q], connection=q.connection).work(burst=False, logging_level="WARNING")


def latency(url: str, k: int, budget: float) -> list[float]:
    q = _queue(url)
    return jobs.latency_loop(lambda: q.enqueue(jobs.lat_sync), k, budget)
