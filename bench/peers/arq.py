"""arq: ``Worker(max_jobs=10)`` with its default ``poll_delay`` (0.5 s)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import jobs
from bench.peers import dist_version, missing

MODES = ("max_jobs=10",)
ROLES = {"add_async", "preload", "worker", "latency"}


def skip_reason(role: str) -> str | None:
    return missing("arq", "arq")


def version() -> str | None:
    return dist_version("arq")


async def incr(ctx: dict[str, Any]) -> None:
    await jobs.incr_async()


async def lat(ctx: dict[str, Any]) -> None:
    await jobs.lat_async()


async def _pool(url: str) -> Any:
    from arq import create_pool
    from arq.connections import RedisSettings

    return await create_pool(RedisSettings.from_dsn(url))


async def add_async(url: str, n: int) -> float:
    pool = await _pool(url)
    t = time.perf_counter()
    for _ in range(n):
        await pool.enqueue_job("incr")
    dt = time.perf_counter() - t
    await pool.aclose()
    return dt


def preload(url: str, n: int) -> None:
    asyncio.run(add_async(url, n))


def worker(url: str, mode: str) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker

    asyncio.set_event_loop(asyncio.new_event_loop())
    Worker(functions=[incr, lat], redis_settings=RedisSettings.from_dsn(url), max_jobs=10,
           handle_signals=True).run()


def latency(url: str, k: int, budget: float) -> list[float]:
    async def go() -> list[float]:
        pool = await _pool(url)

        async def send() -> None:
            await pool.enqueue_job("lat")

        return await jobs.latency_loop_async(send, k, budget)

    return asyncio.run(go())
