"""huey: ``RedisHuey`` (blocking BRPOP reads) with a consumer of 10 worker threads."""

from __future__ import annotations

import time
from typing import Any

from bench import jobs
from bench.peers import dist_version, missing

MODES = ("10 threads",)
ROLES = {"add_single", "preload", "worker", "latency"}
_tasks: dict[str, Any] = {}


def skip_reason(role: str) -> str | None:
    return missing("huey", "huey")


def version() -> str | None:
    return dist_version("huey")


def _setup(url: str) -> tuple[Any, Any, Any]:
    if not _tasks:
        from huey import RedisHuey

        huey = RedisHuey("bench", url=url)

        @huey.task(name="incr")
        def incr() -> None:
            jobs.incr_sync()

        @huey.task(name="lat")
        def lat() -> None:
            jobs.lat_sync()

        _tasks.update(huey=huey, incr=incr, lat=lat)
    return _tasks["huey"], _tasks["incr"], _tasks["lat"]


def add_single(url: str, n: int) -> float:
    huey, incr, _ = _setup(url)
    huey.storage.conn.ping()
    t = time.perf_counter()
    for _ in range(n):
        incr()
    return time.perf_counter() - t


def preload(url: str, n: int) -> None:
    _, incr, _ = _setup(url)
    for _ in range(n):
        incr()


def worker(url: str, mode: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    huey, _, _ = _setup(url)
    huey.create_consumer(workers=10, worker_type="thread").run()


def latency(url: str, k: int, budget: float) -> list[float]:
    _, _, lat = _setup(url)
    return jobs.latency_loop(lat, k, budget)
