"""A small worker process for the reliability tests: ``python worker_main.py URL QUEUE [opts]``.

Each job HINCRBYs ``rt:runs:{QUEUE}`` (field = job id) when it starts, sleeps ``--sleep``
seconds, then HINCRBYs ``rt:done:{QUEUE}`` and returns. ``Worker.run()`` installs the
SIGTERM/SIGINT handlers that stop it gracefully.
"""

from __future__ import annotations

import argparse
import logging
import time

import redis

from nbqueue import Worker, connect


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("queue")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--lock", type=int, default=2000)
    p.add_argument("--stalled", type=int, default=1000)
    p.add_argument("--max-stalled", type=int, default=1000)
    p.add_argument("--grace", type=float, default=30.0)
    p.add_argument("--sleep", type=float, default=0.0)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(process)d %(name)s %(message)s")
    conn = connect(a.url)
    client = redis.Redis.from_url(conn._redis_url, decode_responses=True) if not conn.cluster \
        else conn.sync()
    runs, done = f"rt:runs:{{{a.queue}}}", f"rt:done:{{{a.queue}}}"

    def work(job):  # type: ignore[no-untyped-def]
        client.hincrby(runs, job.id, 1)
        if a.sleep:
            time.sleep(a.sleep)
        client.hincrby(done, job.id, 1)
        return {"ok": job.id}

    print("ready", flush=True)
    Worker(a.queue, work, conn, concurrency=a.concurrency, lock_duration=a.lock,
           stalled_interval=a.stalled, max_stalled_count=a.max_stalled, grace=a.grace).run()
    print("exited", flush=True)


if __name__ == "__main__":
    main()
