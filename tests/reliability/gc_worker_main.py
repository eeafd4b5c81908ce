"""A worker process for the global-concurrency test: ``python gc_worker_main.py URL QUEUE MODE``.

Each job body counts itself into ``gc:running:{QUEUE}`` while it runs (and records the
highest value seen in ``gc:max:{QUEUE}``, atomically), sleeps ``--sleep`` seconds, and
counts itself out. ``MODE`` is thread or asyncio (an async body then).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import redis

from nbqueue import Worker, connect

ENTER = """local n = redis.call('INCR', KEYS[1])
if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
return n"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("queue")
    p.add_argument("mode", choices=("thread", "asyncio"))
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--sleep", type=float, default=0.05)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(process)d %(name)s %(message)s")
    conn = connect(a.url)
    client = redis.Redis.from_url(conn._redis_url, decode_responses=True)
    keys = (f"gc:running:{{{a.queue}}}", f"gc:max:{{{a.queue}}}")
    enter = client.register_script(ENTER)

    def work(job):  # type: ignore[no-untyped-def]
        enter(keys=keys)
        try:
            time.sleep(a.sleep)
        finally:
            client.decr(keys[0])
        return job.id

    async def awork(job):  # type: ignore[no-untyped-def]
        enter(keys=keys)
        try:
            await asyncio.sleep(a.sleep)
        finally:
            client.decr(keys[0])
        return job.id

    print("ready", flush=True)
    Worker(a.queue, work if a.mode == "thread" else awork, conn, concurrency=a.concurrency,
           mode=a.mode).run()


if __name__ == "__main__":
    main()
