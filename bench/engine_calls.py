"""Worker engine calls per job (deterministic, load-independent): no-op jobs, one worker.

``python -m bench.engine_calls --modes asyncio,thread --n 5000 [--top 40]`` preloads ``n``
no-op jobs (like ``bench.engine_cpu``) and drains them with a profile hook installed in
every thread (``sys.setprofile`` + ``threading.setprofile``) that counts Python and C
function calls. It prints calls per job (Python, C, total) and the functions called most
per job. Unlike CPU time, the counts hardly depend on machine load (only the batch sizes
the fetches happen to see), so two versions can be compared on a busy machine.

``python -m bench.engine_calls --round-trips 2000`` counts instead the calls of W4's round
trip (``Queue.add(...).result()`` one after another, a ``mode="thread"`` worker of
concurrency 2 in this process, as ``bench.fanout``'s W4): per trip, by thread -- the caller,
the worker's loop, the job threads. In thread mode all three share this process's GIL, so
their Python runs one after another on a trip's path: the counts say where a leaner worker
has to cut (docs/performance.md, "W4 taken apart").
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


ROLES = ("caller", "worker loop", "job threads")


def _role(name: str) -> str:
    if name.startswith("nbqueue-worker"):
        return "worker loop"
    return "job threads" if name.startswith("nbqueue-job") else "caller"


def round_trip_calls(url: str, k: int) -> dict[str, tuple[Counts, Counts]]:
    """Calls per role (``_role``) during ``k`` warm W4 round trips."""
    conn = nbqueue.connect(url)
    q = nbqueue.Queue("calls-w4", conn)
    counts: dict[str, tuple[Counts, Counts]] = collections.defaultdict(
        lambda: (collections.Counter(), collections.Counter()))
    on = False

    def hook(frame: Any, event: str, arg: Any) -> None:
        if not on:
            return
        if event == "call":
            co = frame.f_code
            counts[_role(threading.current_thread().name)][0][
                f"{co.co_filename.rsplit('/', 2)[-2:]!s}:{co.co_name}"] += 1
        elif event == "c_call":
            counts[_role(threading.current_thread().name)][1][
                getattr(arg, "__qualname__", str(arg))] += 1

    threading.setprofile(hook)  # before the worker starts: its threads get the hook too
    sys.setprofile(hook)
    try:
        with nbqueue.Worker(q.name, lambda job: job.data["i"], conn, concurrency=2,
                            mode="thread"):
            for i in range(200):  # warm: connections, scripts loaded
                q.add({"i": i}).result(timeout=30)
            on = True
            for i in range(k):
                q.add({"i": i}).result(timeout=30)
            on = False
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    q.obliterate(force=True)
    return dict(counts)


def _report(label: str, py: Counts, c: Counts, n: int, top: int, per: str = "job") -> None:
    tp, tc = sum(py.values()), sum(c.values())
    print(f"{label:12s} calls per {per}: python "
          f"{tp / n:.1f}  C {tc / n:.1f}  total {(tp + tc) / n:.1f}")
    both = collections.Counter({f"py {k}": v for k, v in py.items()})
    both.update({f"C  {k}": v for k, v in c.items()})
    for name, v in both.most_common(top):
        print(f"    {v / n:7.2f}  {name}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.engine_calls", description=__doc__)
    ap.add_argument("--modes", default="asyncio,thread")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--round-trips", type=int, default=0, metavar="K",
                    help="count W4's round trip instead (K trips), by thread")
    args = ap.parse_args(argv)
    server = RedisServer().start()
    try:
        if args.round_trips:
            print(f"nbqueue {nbqueue.__file__}, W4 round trips={args.round_trips}")
            by_role = round_trip_calls(server.url, args.round_trips)
            for role in ROLES:
                py, c = by_role.get(role, (collections.Counter(), collections.Counter()))
                _report(role, py, c, args.round_trips, args.top, per="trip")
            return 0
        print(f"nbqueue {nbqueue.__file__}, n={args.n}")
        for mode in args.modes.split(","):
            py, c = drain_calls(server.url, mode, args.n)
            _report(mode, py, c, args.n, args.top)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
