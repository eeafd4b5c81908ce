"""Worker engine instructions per job (load-independent): valgrind counts them.

``python -m bench.engine_instr --modes asyncio,thread --n 500,2500`` preloads no-op jobs on
a private Redis (in this process), then drains them in a child process run under
``valgrind --tool=cachegrind --cache-sim=no`` (``Worker(..., concurrency=10).run()``, as in
``bench.engine_cpu``) and reads the instructions it executed (all its threads; Redis is
another process and is not counted). Two sizes, and the difference divided by the
difference of ``n``: start-up and imports cancel out, what is left is the engine's
instructions per job. Instructions hardly depend on machine load (only through the batch
sizes the fetches happen to see), so two versions can be compared on a busy machine.
Needs ``valgrind`` on PATH; about 20x slower than a native run.
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
from typing import Any

import nbqueue
from nbqueue import Queue, Worker, connect

from .harness import RedisServer


def drain(url: str, name: str, mode: str, n: int) -> None:
    """The child: drain ``n`` preloaded no-op jobs of queue ``name`` and return."""
    conn = connect(url)
    counter = itertools.count(1)
    worker: Worker | None = None

    def done() -> None:
        if next(counter) == n and worker is not None and worker.engine is not None:
            worker.engine.request_stop()

    if mode == "asyncio":
        async def aprocess(job: Any) -> None:
            done()
        worker = Worker(name, aprocess, conn, concurrency=10, mode=mode, dead_letter=False)
    else:
        def process(job: Any) -> None:
            done()
        worker = Worker(name, process, conn, concurrency=10, mode=mode, dead_letter=False)
    worker.run()


def instructions(url: str, mode: str, n: int) -> int:
    conn = connect(url)
    q = Queue(f"instr-{mode}-{n}", conn)
    for i in range(0, n, 1000):
        q.add_bulk([{"i": j} for j in range(i, min(n, i + 1000))])
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
           sys.executable, "-m", "bench.engine_instr", "--child", url, q.name, mode, str(n)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    m = q.get_metrics()
    if m.waiting or m.active:
        raise SystemExit(f"{mode}: the drain did not finish: {m}")
    q.obliterate(force=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        drain(argv[1], argv[2], argv[3], int(argv[4]))
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.engine_instr", description=__doc__)
    ap.add_argument("--modes", default="asyncio,thread")
    ap.add_argument("--n", default="500,2500", help="two job counts: small,large")
    args = ap.parse_args(argv)
    small, large = (int(x) for x in args.n.split(","))
    server = RedisServer().start()
    try:
        print(f"nbqueue {nbqueue.__file__}, n={small},{large}")
        for mode in args.modes.split(","):
            a = instructions(server.url, mode, small)
            b = instructions(server.url, mode, large)
            print(f"{mode:8s} instructions per job: {(b - a) / (large - small) / 1000:.1f} k"
                  f"  (totals {a:,} / {b:,})")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
