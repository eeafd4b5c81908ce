"""Scrape cost: a Prometheus scrape of ``nbqueue metrics`` and ``nbqueue stats``, with 20 and
500 queues and 300k job hashes in Redis, on a private redis-server.

    python -m bench.scrape [--jobs 300000] [--queues 20,500] [--reps 20]

For each queue count: FLUSHALL, add the jobs (spread over the queues, bulk adds), then time
(median and p95 of ``--reps`` runs, wall clock of this process):

- ``scrape``: ``generate_latest`` of a registry holding ``QueueCollector`` (registry of queue
  names: one SMEMBERS, then one read-only script per queue in one pipeline);
- ``stats``: what ``nbqueue stats`` does (the same discovery and read, without Prometheus
  text);
- ``scan discovery``: the SCAN of the whole keyspace that scrapes did before the registry
  (kept only to rebuild an empty registry), for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from bench.harness import RedisServer
from nbqueue import Queue, connect
from nbqueue.metrics import QueueCollector, discover_queues, read_queues, scan_queues
from nbqueue.protocol import run_sync


def timed(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """(median ms, p95 ms) of ``reps`` calls after one warm-up."""
    fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def populate(url: str, queues: int, jobs: int) -> None:
    conn = connect(url)
    per_queue, extra = divmod(jobs, queues)
    for i in range(queues):
        q = Queue(f"bench_q{i:03d}", connection=conn)
        n = per_queue + (1 if i < extra else 0)
        for start in range(0, n, 5000):
            q.add_bulk([{"type": "t", "payload": {"i": k}}
                        for k in range(start, min(n, start + 5000))])
    conn.close()


def measure(url: str, n: int, jobs: int, reps: int) -> str:
    """One line of the table: ``n`` queues holding ``jobs`` job hashes in all."""
    client = connect(url).sync()
    client.flushall()
    populate(url, n, jobs)
    keys = client.dbsize()
    registry = CollectorRegistry()
    registry.register(QueueCollector(url))
    text = generate_latest(registry).decode()
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    scrape = timed(lambda: generate_latest(registry), reps)
    stats = timed(lambda: run_sync(client, read_queues(discover_queues(client))), reps)
    scan = timed(lambda: scan_queues(client), max(3, reps // 4))
    return (f"{n:>6} {keys:>8} {scrape[0]:>9.1f} / {scrape[1]:<8.1f} "
            f"{stats[0]:>7.1f} / {stats[1]:<6.1f} {scan[0]:>9.1f} / {scan[1]:<6.1f} "
            f"{series:>7}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=300_000)
    ap.add_argument("--queues", default="20,500")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    server = RedisServer().start()
    try:
        print(f"redis-server {server.version()}, {args.jobs} job hashes, reps {args.reps}")
        print(f"{'queues':>6} {'keys':>8} {'scrape ms (p50/p95)':>20} {'stats ms':>16} "
              f"{'scan discovery ms':>18} {'series':>7}")
        for n in (int(x) for x in args.queues.split(",")):
            print(measure(server.url, n, args.jobs, args.reps), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
