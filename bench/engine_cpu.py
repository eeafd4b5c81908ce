"""Worker engine CPU per job: no-op jobs, one worker in this process, on a private Redis.

``python -m bench.engine_cpu --modes asyncio,thread --n 20000 --reps 3`` preloads ``n``
no-op jobs, runs ``Worker(..., concurrency=10).run()`` in the foreground until the last job
stops it, and reports the process CPU time (all threads: the engine loop, job threads,
redis-py) per job; the job bodies do nothing, so this is the engine's own cost. Redis runs
in another process and is not counted. ``--profile DIR`` also writes a cProfile (per-thread
CPU time) of the engine's thread for each mode: ``python -m pstats DIR/asyncio.pstats``.

CPU time per job is steadier than a rate on a loaded machine, but still noisy there: take
the minimum over several ``--reps`` and compare runs made side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbqueue
from nbqueue import Queue, Worker, connect

from .harness import RedisServer


def noop_drain(url: str, name: str, mode: str, n: int) -> tuple[Queue, Worker]:
    """``n`` preloaded no-op jobs on queue ``name`` and a worker (concurrency 10) whose last
    job stops it: ``worker.run()`` drains them and returns."""
    conn = connect(url)
    q = Queue(name, conn)
    for i in range(0, n, 1000):
        q.add_bulk([{"i": j} for j in range(i, min(n, i + 1000))])
    counter = itertools.count(1)
    worker: Worker | None = None

    def done() -> None:
        if next(counter) == n and worker is not None and worker.engine is not None:
            worker.engine.request_stop()

    processor: Callable[[Any], Any]
    if mode == "asyncio":
        async def aprocess(job: Any) -> None:
            done()
        processor = aprocess
    else:
        def process(job: Any) -> None:
            done()
        processor = process
    worker = Worker(q.name, processor, conn, concurrency=10, mode=mode, dead_letter=False)
    return q, worker


def drain_cpu(url: str, mode: str, n: int, profile: Path | None = None) -> float:
    """Process CPU seconds per job to drain ``n`` preloaded no-op jobs in ``mode``."""
    q, worker = noop_drain(url, f"cpu-{mode}", mode, n)
    prof = cProfile.Profile(time.thread_time) if profile is not None else None
    c0 = time.process_time()
    if prof is not None:
        prof.enable()
    worker.run()
    if prof is not None:
        prof.disable()
        prof.dump_stats(str(profile))
    cpu = time.process_time() - c0
    m = q.get_metrics()
    if m.waiting or m.active:
        raise SystemExit(f"{mode}: the drain did not finish: {m}")
    q.obliterate(force=True)
    return cpu / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.engine_cpu", description=__doc__)
    ap.add_argument("--modes", default="asyncio,thread")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", type=Path, default=None, help="write DIR/<mode>.pstats")
    args = ap.parse_args(argv)
    server = RedisServer().start()
    try:
        print(f"nbqueue {nbqueue.__file__}, n={args.n}, reps={args.reps}")
        for mode in args.modes.split(","):
            runs = [drain_cpu(server.url, mode, args.n) for _ in range(args.reps)]
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                drain_cpu(server.url, mode, args.n, args.profile / f"{mode}.pstats")
            shown = " ".join(f"{r * 1e6:.1f}" for r in runs)
            print(f"{mode:8s} CPU per job: min {min(runs) * 1e6:.1f} us  (runs: {shown})")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
