"""Per-job cost of the control options (issue 13): deduplication, lifo, global concurrency.

``python -m bench.control --n 5000 --reps 1`` on the harness's private redis-server.
Each variant is measured next to its plain twin in the same run, so the difference is the
option's cost:

* **add one at a time** (in this process, the sync API): plain; ``lifo=True``;
  ``deduplication`` with a fresh id per job (every add creates a job: key SET plus the look
  at the key); with one id (every add after the first is deduplicated: nothing is stored,
  the existing job is read back and returned).
* **drain** (one ``python -m bench.agent nbqueue worker`` subprocess in thread mode,
  concurrency 10, the harness's drain methodology): plain; ``global_concurrency=10`` (a
  limit that never binds: the cost of the two ``ZCARD`` per fetch/finish); and
  ``global_concurrency=5`` (a binding limit: the worker runs half its slots).

Reported per variant: jobs/s, Redis commands per job and Redis CPU µs per job (medians
over ``--reps``). Numbers on a loaded machine are rough; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import jobs
from bench.harness import (
    POLL_S,
    RESULTS,
    RedisServer,
    Runner,
    command_count,
    cpu_now,
    reset_stats,
)

QUEUE = "bench"


def _queue(url: str, **options: Any) -> Any:
    import nbqueue

    return nbqueue.Queue(QUEUE, connection=nbqueue.connect(url), **options)


def _cost(r: redis.Redis, n: int, run: Callable[[], None]) -> dict[str, float]:
    snap = reset_stats(r)
    t = time.perf_counter()
    run()
    secs = time.perf_counter() - t
    return {"rate": n / secs, "cmds": command_count(r) / n,
            "cpu_us": (cpu_now(r) - snap.cpu) / n * 1e6}


def add_variants(url: str, r: redis.Redis, n: int) -> dict[str, dict[str, float]]:
    variants: dict[str, Callable[[int], dict[str, Any]]] = {
        "add plain": lambda i: {},
        "add lifo": lambda i: {"lifo": True},
        "add dedup (new id each)": lambda i: {"deduplication": {"id": f"d{i}"}},
        "add dedup (same id: deduplicated)": lambda i: {"deduplication": {"id": "same"}},
    }
    out = {}
    for label, opts in variants.items():
        r.flushall()
        q = _queue(url)
        q.add({"type": "noop", "payload": {}})  # connect and load the scripts first

        def run(q: Any = q, opts: Callable[[int], dict[str, Any]] = opts) -> None:
            for i in range(n):
                q.add({"type": "noop", "payload": {}}, **opts(i))

        out[label] = _cost(r, n, run)
    return out


def drain_variants(run: Runner, url: str, r: redis.Redis, n: int
                   ) -> dict[str, dict[str, float]]:
    out = {}
    for label, gc in (("drain plain", None), ("drain global_concurrency=10 (not binding)", 10),
                      ("drain global_concurrency=5 (binding)", 5)):
        r.flushall()
        q = _queue(url)
        for s in range(0, n, 1000):
            q.add_bulk([{"type": "noop", "payload": {}} for _ in range(s, min(n, s + 1000))])
        if gc is not None:
            q.set_global_concurrency(gc)
        snap = reset_stats(r)
        polls, t0, c0, c = 0, None, 0, 0
        with run.worker("nbqueue", "thread", "control") as proc:
            deadline = time.perf_counter() + run.timeout
            while c < n and proc.poll() is None and time.perf_counter() < deadline:
                c = int(r.get(jobs.COUNTER) or 0)
                polls += 1
                if c and t0 is None:
                    t0, c0 = time.perf_counter(), c
                time.sleep(POLL_S)
            t1 = time.perf_counter()
            cmds = command_count(r, own_gets=polls)
            cpu = cpu_now(r) - snap.cpu
        done = c - c0
        out[label] = {"rate": done / (t1 - t0) if t0 and t1 > t0 and done else float("nan"),
                      "cmds": cmds / max(c, 1), "cpu_us": cpu / max(c, 1) * 1e6}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.control", description=__doc__)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0)
    a = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "logs").mkdir(exist_ok=True)
    server = RedisServer().start()
    try:
        import os

        os.environ["BENCH_REDIS_URL"] = server.url
        run = Runner(server, "", a.timeout, RESULTS / "logs")
        r = redis.Redis.from_url(server.url)
        reps: list[dict[str, dict[str, float]]] = []
        for rep in range(a.reps):
            res = add_variants(server.url, r, a.n)
            res.update(drain_variants(run, server.url, r, a.n))
            reps.append(res)
            print(f"[bench.control] rep {rep + 1} done", flush=True)
    finally:
        server.stop()
    lines = [f"n={a.n}, reps={a.reps} (medians)", "",
             "| variant | jobs/s | cmds/job | Redis CPU µs/job |", "|---|---:|---:|---:|"]
    for label in reps[0]:
        med = {k: statistics.median(rep[label][k] for rep in reps)
               for k in ("rate", "cmds", "cpu_us")}
        lines.append(f"| {label} | {med['rate']:,.0f} | {med['cmds']:.2f} | "
                     f"{med['cpu_us']:.1f} |")
    table = "\n".join(lines)
    print(table)
    Path(RESULTS / "control.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
