"""saq: ``Worker(concurrency=10)`` on a Redis queue (asyncio)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import jobs
from bench.peers import dist_version, missing

MODES = ("concurrency=10",)
ROLES = {"add_async", "preload", "worker", "latency"}


def skip_reason(role: str) -> str | None:
    return missing("saq", "saq")


def version() -> str | None:
    return dist_version("saq")


async def incr(ctx: Any) -> None:
    await jobs.incr_async()


async def lat(ctx: Any) -> None:
    await jobs.lat_async()


async def _queue(url: str) -> Any:
    from saq import Queue

    q = Queue.from_url(url, name="bench")
    await q.connect()
    return q


async def add_async(url: str, n: int) -> float:
    q = await _queue(url)
    t = time.perf_counter()
    for _ in range(n):
        await q.enqueue("incr")
    dt = time.perf_counter() - t
    await q.disconnect()
    return dt


def preload(url: str, n: int) -> None:
    asyncio.run(add_async(url, n))


def worker(url: str, mode: str) -> None:
    from saq import Worker

    async def go() -> None:
        q = await _queue(url)
        await Worker(q, functions=[incr, lat], concurrency=10).start()

    asyncio.run(go())


def latency(url: str, k: int, budget: float) -> list[float]:
    async def go() -> list[float]:
        q = await _queue(url)

        async def send() -> None:
            await q.enqueue("lat")

        return await jobs.latency_loop_async(send, k, budget)

    return asyncio.run(go())
