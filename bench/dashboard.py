"""Cost of one dashboard refresh with many queues (issue 14).

``python -m bench.dashboard --queues 50 --refreshes 50`` on the harness's private
redis-server. Each queue has waiting, delayed, completed and failed jobs, an active job with
progress, a registered worker and per-minute history, so every part of a refresh reads
something. Measured per refresh (``Dashboard.refresh()``, no frontend attached):

* **round trips**: socket writes of redis-py (``Connection.send_packed_command``): one per
  pipeline or command sent and waited for; counted independently of the panel;
* **Redis commands** (``INFO commandstats``, minus the harness's own INFO/CONFIG);
* **wall ms** (median and p90): the round trip plus building the JSON snapshot;
* **Redis CPU µs** per refresh.

The panel's refresher thread does exactly this every ``refresh`` seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import redis

from bench.harness import RedisServer, command_count, cpu_now, reset_stats


def _populate(url: str, names: list[str]) -> None:
    import nbqueue

    mgr = nbqueue.QueueManager(url)
    for i, name in enumerate(names):
        q = mgr.get_queue(name)
        q.add_bulk([{"type": "t", "payload": {"i": k}} for k in range(5)])
        q.add({"type": "later", "payload": {}}, delay=3_600_000)
        q._run(q._ops.heartbeat(f"bench-{i}", 600_000, {"host": "bench", "pid": 1,
                                                        "mode": "thread",
                                                        "concurrency": 4}, 1))
    # Some finished jobs and history: run one quick worker per queue over a few jobs.
    for name in names:
        q = mgr.get_queue(name)
        with nbqueue.Worker(name, lambda job: job.payload.get("i"), mgr.connection):
            jobs = q.add_bulk([{"type": "done", "payload": {"i": k}} for k in range(3)])
            for j in jobs:
                j.result(timeout=30)
        q.add({"type": "t", "payload": {}})  # waiting again
    mgr.close()


def measure(url: str, n_queues: int, refreshes: int) -> dict[str, Any]:
    import nbqueue
    from nbqueue.notebook.dashboard import Dashboard

    names = [f"dash-bench-{i:02d}" for i in range(n_queues)]
    _populate(url, names)
    mgr = nbqueue.QueueManager(url)
    panel = Dashboard(names, refresh=None, manager=mgr)
    panel.refresh()  # warm: the first refresh also reads the 30 minutes of history
    r = redis.Redis.from_url(url)
    sends = {"n": 0}
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sends["n"] += 1
        original(self, command, check_health)

    times: list[float] = []
    trips: list[int] = []
    reset_stats(r)
    cpu0 = cpu_now(r)
    redis.connection.AbstractConnection.send_packed_command = counting  # type: ignore
    try:
        for _ in range(refreshes):
            before = sends["n"]
            t0 = time.perf_counter()
            panel.refresh()
            times.append((time.perf_counter() - t0) * 1000)
            trips.append(sends["n"] - before)
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore
    cpu = cpu_now(r) - cpu0
    commands = command_count(r)
    assert panel.last_error is None, panel.last_error
    assert len(panel.rows) == n_queues
    panel.close()
    mgr.close()
    times.sort()
    return {"queues": n_queues, "refreshes": refreshes,
            "round_trips": statistics.median(trips), "max_round_trips": max(trips),
            "commands": commands / refreshes,
            "ms_median": statistics.median(times),
            "ms_p90": times[int(0.9 * (len(times) - 1))],
            "redis_cpu_us": cpu / refreshes * 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queues", type=int, nargs="*", default=[1, 10, 50])
    ap.add_argument("--refreshes", type=int, default=50)
    args = ap.parse_args(argv)
    server = RedisServer().start()
    try:
        print(f"{'queues':>6} {'round trips':>11} {'commands':>9} {'ms median':>9} "
              f"{'ms p90':>7} {'Redis CPU µs':>12}")
        for n in args.queues:
            r = redis.Redis.from_url(server.url)
            r.flushall()
            m = measure(server.url, n, args.refreshes)
            print(f"{m['queues']:>6} {m['round_trips']:>7.0f} (max {m['max_round_trips']})"
                  f" {m['commands']:>7.0f} {m['ms_median']:>9.2f} {m['ms_p90']:>7.2f} "
                  f"{m['redis_cpu_us']:>12.0f}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
