"""nbqueue adapter, written against the public contract in DESIGN.md.

Uses only ``nbqueue.connect``, ``nbqueue.Queue`` (``add``, ``add_bulk``), ``nbqueue.Worker``
(``mode="thread" | "asyncio" | "process"``, ``run()``) and ``nbqueue.aio.Queue``. Each role
is skipped with a note while the names it needs are missing, so the harness runs before the
core lands. Worker modes: ``thread`` and ``asyncio`` run the processor in the worker
process itself (concurrency 10); ``process`` runs ``Worker(mode="process")`` with one child
process at concurrency 10 (``processes=1`` is passed if the constructor takes it).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import time
from typing import Any

from bench import jobs

MODES = ("thread", "asyncio", "process")
ROLES = {"add_single", "add_async", "add_bulk", "preload", "worker", "latency"}
QUEUE = "bench"
CHUNK = 1000

NEEDS = {
    "info": ("Queue",),
    "add_single": ("connect", "Queue"),
    "add_bulk": ("connect", "Queue"),
    "preload": ("connect", "Queue"),
    "add_async": ("connect", "aio.Queue"),
    "worker": ("connect", "Worker"),
    "latency": ("connect", "Queue", "Worker"),
}


def _has(name: str) -> bool:
    mod_name, _, attr = ("nbqueue." + name).rpartition(".")
    try:
        mod = importlib.import_module(mod_name)
    except Exception:
        return False
    return hasattr(mod, attr)


def skip_reason(role: str) -> str | None:
    try:
        importlib.import_module("nbqueue")
    except Exception as e:
        return f"import nbqueue failed: {type(e).__name__}: {e}"
    missing = [n for n in NEEDS.get(role, ()) if not _has(n)]
    if missing:
        return f"pending: nbqueue has no {', '.join(missing)} yet"
    if role == "add_bulk" or role == "preload":
        import nbqueue

        if not hasattr(nbqueue.Queue, "add_bulk"):
            return "pending: nbqueue.Queue has no add_bulk yet"
    return None


def version() -> str | None:
    try:
        import nbqueue
    except Exception:
        return None
    return f"nbqueue {getattr(nbqueue, '__version__', '(dev)')}"


NOOP: dict[str, Any] = {"type": "noop", "payload": {}}
LAT: dict[str, Any] = {"type": "lat", "payload": {}}


def _queue(url: str) -> Any:
    import nbqueue

    return nbqueue.Queue(QUEUE, connection=nbqueue.connect(url))


def _close(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


def add_single(url: str, n: int) -> float:
    q = _queue(url)
    q.add(dict(NOOP))  # connect + load scripts, not timed (still counted in the cost)
    t = time.perf_counter()
    for _ in range(n - 1):
        q.add({"type": "noop", "payload": {}})
    dt = (time.perf_counter() - t) * n / max(n - 1, 1)
    _close(q)
    return dt


def add_bulk(url: str, n: int) -> float:
    q = _queue(url)
    q.add_bulk([dict(NOOP)])
    t = time.perf_counter()
    left = n - 1
    while left > 0:
        k = min(CHUNK, left)
        q.add_bulk([{"type": "noop", "payload": {}} for _ in range(k)])
        left -= k
    dt = (time.perf_counter() - t) * n / max(n - 1, 1)
    _close(q)
    return dt


def preload(url: str, n: int) -> None:
    q = _queue(url)
    for s in range(0, n, CHUNK):
        q.add_bulk([{"type": "noop", "payload": {}} for _ in range(s, min(n, s + CHUNK))])
    _close(q)


async def _aqueue(url: str) -> Any:
    import nbqueue
    import nbqueue.aio as aio

    conn: Any = None
    aconnect = getattr(aio, "connect", None)
    if aconnect is not None:
        conn = aconnect(url)
        if inspect.isawaitable(conn):
            conn = await conn
    else:
        conn = nbqueue.connect(url)
    return aio.Queue(QUEUE, connection=conn)


async def _aclose(obj: Any) -> None:
    for name in ("aclose", "close"):
        fn = getattr(obj, name, None)
        if callable(fn):
            with contextlib.suppress(Exception):
                res = fn()
                if inspect.isawaitable(res):
                    await res
            return


async def add_async(url: str, n: int) -> float:
    q = await _aqueue(url)
    await q.add(dict(NOOP))
    t = time.perf_counter()
    for _ in range(n - 1):
        await q.add({"type": "noop", "payload": {}})
    dt = (time.perf_counter() - t) * n / max(n - 1, 1)
    await _aclose(q)
    return dt


# processors: module-level so mode="process" can hand them to the child by reference
def process_sync(job: Any) -> None:
    if job.data.get("type") == "lat":
        jobs.lat_sync()
    else:
        jobs.incr_sync()


async def process_async(job: Any) -> None:
    if job.data.get("type") == "lat":
        await jobs.lat_async()
    else:
        await jobs.incr_async()


def worker(url: str, mode: str) -> None:
    import nbqueue

    fn = process_async if mode == "asyncio" else process_sync
    kwargs: dict[str, Any] = {"connection": nbqueue.connect(url), "concurrency": 10,
                              "mode": mode}
    if mode == "process":
        params = inspect.signature(nbqueue.Worker).parameters
        for name in ("processes", "num_processes", "workers"):
            if name in params:
                kwargs[name] = 1
                break
    w = nbqueue.Worker(QUEUE, fn, **kwargs)
    w.run()


def latency(url: str, k: int, budget: float) -> list[float]:
    q = _queue(url)
    out = jobs.latency_loop(lambda: q.add({"type": "lat", "payload": {}}), k, budget)
    _close(q)
    return out


