"""bullmq (the official Python port; asyncio only): ``Worker(concurrency=10)``.
Its defaults are kept (completed jobs are retained, as BullMQ does by default)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from bench import jobs
from bench.peers import dist_version, missing

MODES = ("concurrency=10",)
ROLES = {"add_async", "add_bulk", "preload", "worker", "latency"}


def skip_reason(role: str) -> str | None:
    return missing("bullmq", "bullmq")


def version() -> str | None:
    return dist_version("bullmq")


async def process(job: Any, token: str) -> None:
    if job.name == "lat":
        await jobs.lat_async()
    else:
        await jobs.incr_async()


def _queue(url: str) -> Any:
    from bullmq import Queue

    return Queue("bench", {"connection": url})


async def add_async(url: str, n: int) -> float:
    q = _queue(url)
    await q.add("noop", {})  # connect + load scripts, not timed
    t = time.perf_counter()
    for _ in range(n - 1):
        await q.add("noop", {})
    dt = (time.perf_counter() - t) * n / max(n - 1, 1)
    await q.close()
    return dt


async def _bulk(url: str, n: int) -> float:
    q = _queue(url)
    await q.addBulk([{"name": "noop", "data": {}}])
    t = time.perf_counter()
    left = n - 1
    while left > 0:
        k = min(1000, left)
        await q.addBulk([{"name": "noop", "data": {}} for _ in range(k)])
        left -= k
    dt = (time.perf_counter() - t) * n / max(n - 1, 1)
    await q.close()
    return dt


def add_bulk(url: str, n: int) -> float:
    return asyncio.run(_bulk(url, n))


def preload(url: str, n: int) -> None:
    add_bulk(url, n)


def worker(url: str, mode: str) -> None:
    from bullmq import Worker

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        w = Worker("bench", process, {"connection": url, "concurrency": 10})
        await stop.wait()
        await w.close()

    asyncio.run(go())


def latency(url: str, k: int, budget: float) -> list[float]:
    async def go() -> list[float]:
        q = _queue(url)

        async def send() -> None:
            await q.add("lat", {})

        out = await jobs.latency_loop_async(send, k, budget)
        await q.close()
        return out

    return asyncio.run(go())
