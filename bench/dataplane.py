"""The data plane: ``Queue.map`` of a DataFrame, kernel time and bytes through Redis.

``python -m bench.dataplane [--tree /work/base] [--repeats 3]`` on a private redis-server.
Each run is a fresh subprocess (``bench/dataplane.py --child``) whose ``nbqueue`` comes from
the tree given (this repository by default; ``--tree /work/base`` adds the code before the
data plane, interleaved), so the two are measured back to back on the same machine:

* the frame: ``rows`` rows of sales data (a tz-aware timestamp, a categorical, a nullable
  ``Int64``, a ``string`` and a float column, a named ``RangeIndex``);
* **map**: the wall and CPU time of ``Queue.map(df, chunksize=...)`` in the calling
  process (what blocks the notebook's kernel), and the bytes Redis received during it;
* **run**: then a thread-mode ``Worker`` (concurrency 2, in the same process) runs a
  ``groupby`` on each chunk (``chunk_frame``) and the results are gathered with
  ``results_frame()``: the wall time from the map's start to the frame, and the bytes
  Redis received and sent for the whole run (``INFO stats`` ``total_net_input_bytes`` /
  ``total_net_output_bytes`` after ``CONFIG RESETSTAT``).

Stores: ``redis`` (the default) and ``file`` (a ``file://`` store in a temporary
directory: the chunks and results then never enter Redis). The tree before the data plane
has no stores and sends chunks as JSON: its ``file`` rows are not run, and a chunk over its
1 MB payload limit is reported as refused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
CASES = (  # (label, rows, chunksize)
    ("200k rows / 20 chunks", 200_000, 10_000),
    ("1M rows / 20 chunks", 1_000_000, 50_000),
    ("1M rows / 1000 chunks", 1_000_000, 1_000),
)


# -- the child: one run, in the tree's nbqueue ------------------------------------------------
def frame(rows: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "day": pd.date_range("2026-01-01", periods=rows, freq="s", tz="Europe/Paris"),
        "city": pd.Categorical(rng.choice(["Paris", "Lyon", "Nice", "Lille"], rows)),
        "qty": pd.array(rng.integers(1, 10, rows), dtype="Int64"),
        "sku": pd.array(rng.choice(["a-1", "b-2", "c-3"], rows), dtype="string"),
        "price": rng.random(rows) * 100,
    }, index=pd.RangeIndex(0, rows, name="order_id"))


def child(url: str, store: str, rows: int, chunksize: int) -> dict[str, Any]:
    import redis

    import nbqueue
    from nbqueue import Queue, Worker, chunk_frame

    arrow = hasattr(nbqueue, "StoreError")  # the data plane's code
    df = frame(rows)
    r = redis.Redis.from_url(url)
    r.flushall()
    conn = nbqueue.connect(url, store=store) if arrow else nbqueue.connect(url)
    q = Queue("dataplane", conn)

    def proc(job: Any) -> Any:
        part = chunk_frame(job)
        out = part.groupby("city", observed=True)["price"].agg(["sum", "count"])
        return out if arrow else out.reset_index().to_dict("records")

    def net() -> tuple[int, int]:
        info = r.info("stats")
        return int(info["total_net_input_bytes"]), int(info["total_net_output_bytes"])

    r.config_resetstat()
    in0, out0 = net()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        batch = q.map(df, chunksize=chunksize)
    except Exception as exc:  # the old code's payload limit
        return {"refused": f"{type(exc).__name__}: {str(exc)[:80]}"}
    map_wall, map_cpu = time.perf_counter() - t0, time.process_time() - c0
    in1, _ = net()
    with Worker(q.name, proc, conn, concurrency=2):
        result = batch.results_frame(timeout=600)
    run_wall = time.perf_counter() - t0
    in2, out2 = net()
    r.close()
    return {"jobs": len(batch), "map_wall": map_wall, "map_cpu": map_cpu,
            "map_in": in1 - in0, "run_wall": run_wall, "run_in": in2 - in0,
            "run_out": out2 - out0, "result_rows": len(result)}


# -- the harness ------------------------------------------------------------------------------
def _run_child(tree: Path, url: str, store: str, rows: int, chunksize: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    env.pop("NBQUEUE_STORE", None)
    out = subprocess.run([sys.executable, str(HERE), "--child", "--url", url, "--store",
                          store, "--rows", str(rows), "--chunksize", str(chunksize)],
                         env=env, capture_output=True, text=True, timeout=1800, cwd=tree)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} KB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", default="")
    p.add_argument("--store", default="redis")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--chunksize", type=int, default=10_000)
    p.add_argument("--tree", action="append", default=[],
                   help="also run this tree's nbqueue (e.g. /work/base), interleaved")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cases", default="0,1,2", help="which CASES (indexes) to run")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.url, args.store, args.rows, args.chunksize)))
        return
    sys.path.insert(0, str(REPO))
    from bench.harness import RedisServer

    trees = [REPO, *(Path(t).resolve() for t in args.tree)]
    server = RedisServer().start()
    rows_out: list[tuple[str, str, str, list[dict[str, Any]]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="nbq-bench-store-") as tmp:
            plan = []
            for i in (int(x) for x in args.cases.split(",")):
                label, rows, chunksize = CASES[i]
                for tree in trees:
                    for store in ("redis", "file"):
                        if store == "file" and tree != REPO:
                            continue  # the code before the data plane has no stores
                        plan.append((label, rows, chunksize, tree, store))
            results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
            for rep in range(args.repeats):
                for label, rows, chunksize, tree, store in plan:  # interleaved
                    url = f"file://{tmp}/s{rep}" if store == "file" else "redis"
                    got = _run_child(tree, server.url, url, rows, chunksize)
                    results.setdefault((label, str(tree), store), []).append(got)
                    print(f"rep {rep} {label} {tree} {store}: {got}", file=sys.stderr)
            for (label, tree, store), runs in results.items():
                rows_out.append((label, tree, store, runs))
    finally:
        server.stop()
    print(f"redis-server {server.url}; {args.repeats} repetition(s), interleaved; medians\n")
    print("| case | code | store | jobs | map wall | map CPU | bytes in during map | "
          "run wall (map to frame) | bytes in / out, whole run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, tree, store, runs in rows_out:
        ok = [x for x in runs if "map_wall" in x]
        code = "this tree" if Path(tree) == REPO else tree
        if not ok:
            why = runs[0].get("refused") or runs[0].get("error")
            print(f"| {label} | {code} | {store} | - | refused: {why} | | | | |")
            continue

        def med(key: str, runs: list[dict[str, Any]] = ok) -> float:
            return float(statistics.median(x[key] for x in runs))

        print(f"| {label} | {code} | {store} | {ok[0]['jobs']} | {med('map_wall'):.2f} s | "
              f"{med('map_cpu'):.2f} s | {_mb(med('map_in'))} | {med('run_wall'):.2f} s | "
              f"{_mb(med('run_in'))} / {_mb(med('run_out'))} |")


if __name__ == "__main__":
    main()
