"""``Queue.map`` of many small items vs. one job per item vs. ``ProcessPoolExecutor.map``.

``python -m bench.map --n 100000 --chunksize 1000`` on a private redis-server. The same
function (``work``: a few arithmetic operations on one small item) runs over ``n`` items:

* **ProcessPoolExecutor.map** (``--processes`` workers, ``chunksize``): the no-queue ceiling.
* **nbqueue map, chunks**: ``Queue.map(items, chunksize=...)``, one job per chunk; a
  process-mode ``Worker`` (``--processes`` children) runs ``work`` over each chunk's items.
* **nbqueue map, a job per item**: ``Queue.map(items)`` (bulk adds, one job per item), the
  same worker running ``work`` on each job.
* **nbqueue add, one at a time**: ``Queue.add`` per item (``--single-n`` of them, by default
  all ``n``), the same worker.

Each nbqueue variant is timed from the first add to the last result gathered by
``JobBatch.results()`` (results in input order, checked against ``work``), with the worker
already started and warm. Reported: items/s, jobs/s, overhead per item against the pool
(µs: (time - pool time) / items), Redis commands per item. Numbers on a loaded machine are
rough; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import time
from collections.abc import Callable
from typing import Any

import redis

from bench.harness import RedisServer, command_count, reset_stats

QUEUE = "bench-map"


def work(x: int) -> int:
    """The per-item function: small, pure, CPU-only."""
    return (x * x + 7 * x + 3) % 1_000_003


def run_chunk(job: Any) -> list[int]:
    return [work(d["payload"]["x"]) for d in job.payload["items"]]


def run_item(job: Any) -> int:
    return work(job.payload["x"])


def process(job: Any) -> Any:
    """The processor of every nbqueue variant (a chunk job or a one-item job)."""
    if job.name == "chunk":
        return run_chunk(job)
    return run_item(job)


def _items(n: int) -> list[dict[str, Any]]:
    return [{"type": "item", "payload": {"x": i}} for i in range(n)]


def _flat(values: list[Any]) -> list[int]:
    out: list[int] = []
    for v in values:
        if isinstance(v, list):
            out.extend(v)
        else:
            out.append(v)
    return out


def bench_pool(n: int, chunksize: int, processes: int) -> float:
    xs = list(range(n))
    with concurrent.futures.ProcessPoolExecutor(processes) as pool:
        list(pool.map(work, range(processes * 4)))  # warm: the workers are up
        t0 = time.perf_counter()
        out = list(pool.map(work, xs, chunksize=chunksize))
        t = time.perf_counter() - t0
    assert out == [work(x) for x in xs]
    return t


def bench_nbqueue(url: str, r: redis.Redis, n: int, label: str,
                  enqueue: Callable[[Any, list[dict[str, Any]]], Any],
                  processes: int, concurrency: int) -> dict[str, float]:
    import nbqueue

    r.flushall()
    conn = nbqueue.connect(url)
    q = nbqueue.Queue(QUEUE, conn)
    worker = nbqueue.Worker(QUEUE, process, conn, mode="process", processes=processes,
                            concurrency=concurrency, dead_letter=False).start()
    try:
        warm = q.map(_items(processes * 4))
        warm.results(timeout=120)  # the children are up and have run jobs
        q.clean(0, 0, "completed")
        items = _items(n)
        snap = reset_stats(r)
        t0 = time.perf_counter()
        batch = enqueue(q, items)
        t_add = time.perf_counter() - t0
        values = batch.results(timeout=3600)
        t = time.perf_counter() - t0
        cmds = command_count(r)
        cpu = float(r.info("cpu")["used_cpu_user"]) + float(r.info("cpu")["used_cpu_sys"])
    finally:
        worker.stop()
        conn.close()
    assert _flat(values) == [work(i) for i in range(n)], f"{label}: wrong results"
    return {"time": t, "add": t_add, "jobs": len(batch), "items": n, "cmds": cmds,
            "redis_cpu": cpu - snap.cpu}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.map", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="items (default 100000)")
    p.add_argument("--chunksize", type=int, default=1000, help="items per job/task (1000)")
    p.add_argument("--single-n", type=int, default=None,
                   help="items for the one-add-per-item variant (default: --n)")
    p.add_argument("--processes", type=int, default=2, help="worker processes (2)")
    p.add_argument("--concurrency", type=int, default=16,
                   help="nbqueue worker concurrency, over all processes (16)")
    a = p.parse_args(argv)
    single_n = a.single_n or a.n
    server = RedisServer().start()
    try:
        r = redis.Redis.from_url(server.url)
        rows: list[tuple[str, dict[str, float]]] = []
        t_pool = bench_pool(a.n, a.chunksize, a.processes)
        rows.append((f"ProcessPoolExecutor.map, chunksize={a.chunksize}",
                     {"time": t_pool, "add": 0.0, "jobs": -(-a.n // a.chunksize),
                      "items": a.n, "cmds": 0, "redis_cpu": 0.0}))
        print(f"[bench.map] pool: {t_pool:.2f}s", flush=True)
        variants: list[tuple[str, int, Callable[[Any, list[dict[str, Any]]], Any]]] = [
            (f"nbqueue Queue.map, chunksize={a.chunksize}", a.n,
             lambda q, items: q.map(items, chunksize=a.chunksize, job_type="chunk")),
            ("nbqueue Queue.map, a job per item", a.n, lambda q, items: q.map(items)),
            ("nbqueue Queue.add per item (one at a time)", single_n,
             lambda q, items: nbqueue_batch([q.add(d, remove_on_complete={"age": 86400})
                                             for d in items])),
        ]
        for label, n, enqueue in variants:
            res = bench_nbqueue(server.url, r, n, label, enqueue, a.processes, a.concurrency)
            rows.append((label, res))
            print(f"[bench.map] {label}: {res['time']:.2f}s", flush=True)
    finally:
        server.stop()
    pool_per_item = t_pool / a.n
    lines = [f"n={a.n} items, {a.processes} processes, nbqueue worker concurrency "
             f"{a.concurrency}, machine: {os.cpu_count()} cores", "",
             "| variant | items | jobs | time s | (add s) | items/s | jobs/s | "
             "overhead µs/item vs pool | Redis cmds/item |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, m in rows:
        over = (m["time"] / m["items"] - pool_per_item) * 1e6
        queued = m["cmds"] > 0
        over_s = f"{over:,.1f}" if queued else "-"
        cmds_s = f"{m['cmds'] / m['items']:.2f}" if queued else "-"
        lines.append(
            f"| {label} | {m['items']:,.0f} | {m['jobs']:,.0f} | {m['time']:.2f} | "
            f"{m['add']:.2f} | {m['items'] / m['time']:,.0f} | {m['jobs'] / m['time']:,.0f} | "
            f"{over_s} | {cmds_s} |")
    print("\n".join(lines))
    return 0


def nbqueue_batch(jobs: list[Any]) -> Any:
    from nbqueue import JobBatch

    return JobBatch(jobs)


if __name__ == "__main__":
    raise SystemExit(main())
