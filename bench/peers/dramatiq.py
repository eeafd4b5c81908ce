"""dramatiq: its ``Worker`` in-process with 1 process and 10 worker threads, Redis broker,
default middleware (as ``dramatiq --processes 1 --threads 10`` would run it)."""

from __future__ import annotations

import time
from typing import Any

from bench import jobs
from bench.peers import dist_version, missing

MODES = ("1 proc x 10 threads",)
ROLES = {"add_single", "preload", "worker", "latency"}
_actors: dict[str, Any] = {}


def skip_reason(role: str) -> str | None:
    return missing("dramatiq.brokers.redis", "dramatiq[redis]")


def version() -> str | None:
    return dist_version("dramatiq")


def _setup(url: str) -> tuple[Any, Any, Any]:
    if not _actors:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url)
        dramatiq.set_broker(broker)

        @dramatiq.actor(queue_name="bench", max_retries=0)
        def incr() -> None:
            jobs.incr_sync()

        @dramatiq.actor(queue_name="bench", max_retries=0)
        def lat() -> None:
            jobs.lat_sync()

        _actors.update(broker=broker, incr=incr, lat=lat)
    return _actors["broker"], _actors["incr"], _actors["lat"]


def add_single(url: str, n: int) -> float:
    _, incr, _ = _setup(url)
    incr.send()  # warm the connection and script cache (not timed; counted in cost)
    t = time.perf_counter()
    for _ in range(n - 1):
        incr.send()
    return (time.perf_counter() - t) * n / max(n - 1, 1)


def preload(url: str, n: int) -> None:
    _, incr, _ = _setup(url)
    for _ in range(n):
        incr.send()


def worker(url: str, mode: str) -> None:
    import dramatiq

    broker, _, _ = _setup(url)
    w = dramatiq.Worker(broker, worker_threads=10)
    w.start()
    try:
        while True:
            time.sleep(1)
    finally:
        w.stop()


def latency(url: str, k: int, budget: float) -> list[float]:
    _, _, lat = _setup(url)
    return jobs.latency_loop(lat.send, k, budget)
