"""Worker engine calls per job (deterministic, load-independent): no-op jobs, one worker.

``python -m bench.engine_calls --modes asyncio,thread --n 5000 [--top 40]`` preloads ``n``
no-op jobs (like ``bench.engine_cpu``) and drains them with a profile hook installed in
every thread (``sys.setprofile`` + ``threading.setprofile``) that counts Python and C
function calls. It prints calls per job (Python, C, total) and the functions called most
per job. Unlike CPU time, the counts hardly depend on machine load (only the batch sizes
the fetches happen to see), so two versions can be compared on a busy machine.
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
from typing import Any

import nbqueue

from .engine_cpu import noop_drain
from .harness import RedisServer

Counts = collections.Counter[str]


def drain_calls(url: str, mode: str, n: int) -> tuple[Counts, Counts]:
    q, worker = noop_drain(url, f"calls-{mode}", mode, n)
    py: Counts = collections.Counter()
    c: Counts = collections.Counter()

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            co = frame.f_code
            py[f"{co.co_filename.rsplit('/', 2)[-2:]!s}:{co.co_name}"] += 1
        elif event == "c_call":
            c[getattr(arg, "__qualname__", str(arg))] += 1

    threading.setprofile(hook)
    sys.setprofile(hook)
    try:
        worker.run()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    m = q.get_metrics()
    if m.waiting or m.active:
        raise SystemExit(f"{mode}: the drain did not finish: {m}")
    q.obliterate(force=True)
    return py, c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.engine_calls", description=__doc__)
    ap.add_argument("--modes", default="asyncio,thread")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    server = RedisServer().start()
    try:
        print(f"nbqueue {nbqueue.__file__}, n={args.n}")
        for mode in args.modes.split(","):
            py, c = drain_calls(server.url, mode, args.n)
            tp, tc = sum(py.values()), sum(c.values())
            print(f"{mode:8s} calls per job: python {tp / args.n:.1f}  C {tc / args.n:.1f}"
                  f"  total {(tp + tc) / args.n:.1f}")
            both = collections.Counter({f"py {k}": v for k, v in py.items()})
            both.update({f"C  {k}": v for k, v in c.items()})
            for name, v in both.most_common(args.top):
                print(f"    {v / args.n:7.2f}  {name}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
