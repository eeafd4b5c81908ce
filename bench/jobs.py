"""Job bodies shared by every system under test.

Every drain job does exactly one ``INCR`` on :data:`COUNTER`; every latency job does one
``RPUSH`` of ``time.time()`` (taken when the body starts) onto :data:`LAT_KEY`. The Redis
URL comes from the ``BENCH_REDIS_URL`` environment variable, set by the harness for every
subprocess. Clients are created lazily, once per process (and per event loop for asyncio).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import redis
import redis.asyncio as aredis

COUNTER = "bench:counter"
LAT_KEY = "bench:lat"

_sync: redis.Redis | None = None
_sync_pid = 0
_sync_lock = threading.Lock()
_async: dict[int, Any] = {}


def url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")


def sync_client() -> redis.Redis:
    global _sync, _sync_pid
    if _sync is None or _sync_pid != os.getpid():
        with _sync_lock:
            if _sync is None or _sync_pid != os.getpid():
                _sync = redis.Redis.from_url(url(), max_connections=64)
                _sync_pid = os.getpid()
    return _sync


def async_client() -> Any:
    loop = asyncio.get_running_loop()
    key = id(loop)
    c = _async.get(key)
    if c is None:
        c = aredis.Redis.from_url(url())
        _async[key] = c
    return c


def incr_sync() -> None:
    sync_client().incr(COUNTER)


def lat_sync() -> None:
    sync_client().rpush(LAT_KEY, repr(time.time()))


async def incr_async() -> None:
    await async_client().incr(COUNTER)


async def lat_async() -> None:
    await async_client().rpush(LAT_KEY, repr(time.time()))


def wait_latency_sample(r: redis.Redis, t_sent: float, timeout: float = 10.0) -> float | None:
    """Block until the next latency job reports its start time; return start - t_sent."""
    got = r.blpop([LAT_KEY], timeout=timeout)
    if got is None:
        return None
    return float(got[1]) - t_sent


WARMUP = 10
GAP_S = 0.002  # let the worker go back to its idle wait between latency jobs


def latency_loop(send: Any, k: int, budget_s: float) -> list[float]:
    """Send ``k`` latency jobs one after another with ``send()``; return enqueue-to-start (s).

    The first :data:`WARMUP` samples are dropped; sampling stops early after ``budget_s``
    (at least 30 samples are still taken) so a slow-polling system cannot stall the run.
    """
    r = redis.Redis.from_url(url())
    out: list[float] = []
    t_start = time.monotonic()
    for i in range(k + WARMUP):
        time.sleep(GAP_S)
        t = time.time()
        send()
        d = wait_latency_sample(r, t)
        if d is None:
            raise RuntimeError(f"latency job {i} never started")
        if i >= WARMUP:
            out.append(d)
        if len(out) >= 30 and time.monotonic() - t_start > budget_s:
            break
    return out


async def latency_loop_async(send: Any, k: int, budget_s: float) -> list[float]:
    """Async twin of :func:`latency_loop`; ``send`` is a coroutine function."""
    r = aredis.Redis.from_url(url())
    out: list[float] = []
    t_start = time.monotonic()
    for i in range(k + WARMUP):
        await asyncio.sleep(GAP_S)
        t = time.time()
        await send()
        got = await r.blpop([LAT_KEY], timeout=10)
        if got is None:
            raise RuntimeError(f"latency job {i} never started")
        if i >= WARMUP:
            out.append(float(got[1]) - t)
        if len(out) >= 30 and time.monotonic() - t_start > budget_s:
            break
    await r.aclose()
    return out
