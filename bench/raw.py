"""Raw redis-py floors: the fastest a plain list queue can go on this machine.

Producers LPUSH a small JSON message onto ``raw:wait``; consumers take from the right (FIFO).

Worker modes (the drain floors):

* ``rt1``     the reliable-queue consumer at one round trip of queue overhead per job:
              ``BLMOVE wait -> processing``, then the job body (``INCR``, its own round
              trip, as in every system), then one pipelined ``[LREM processing job,
              BLMOVE next]`` round trip that acks this job and fetches the next one.
              This is the floor the bar compares against ("raw 1-RTT consumer").
* ``classic`` the textbook version: BLMOVE, INCR, LREM as three separate calls.
* ``batch``   a pipelined batch consumer: ``RPOP wait 100`` + one ``INCRBY`` per batch
              (no reliability: the upper bound for a batching design).

Ceilings (not queues): the job body alone, as fast as one process can run it at
concurrency 10 with no queue at all. The worker reads how many jobs were preloaded and runs
that many bodies; whatever a queue adds can only make a drain slower than this.

* ``ceiling-async``   10 asyncio tasks, each ``await client.incr()`` in turn (the body of
                      every asyncio worker: nbqueue asyncio, arq, saq, bullmq).
* ``ceiling-threads`` 10 threads sharing one sync client, each ``client.incr()`` in turn
                      (the body of every thread worker: nbqueue thread/process, dramatiq,
                      huey).
"""

from __future__ import annotations

import json
import time

import redis
import redis.asyncio as aredis

from bench import jobs

WAIT = "raw:wait"
PROCESSING = "raw:processing"
MODES = ("rt1", "classic", "batch", "ceiling-async", "ceiling-threads")
CEILINGS = ("ceiling-async", "ceiling-threads")  # no latency scenario: they consume nothing
ROLES = {"add_single", "add_async", "add_bulk", "preload", "worker", "latency"}


def skip_reason(role: str) -> str | None:
    return None


def version() -> str:
    return f"redis-py {redis.__version__}"


def _msg(i: int, kind: str = "noop") -> str:
    return json.dumps({"id": str(i), "data": {"type": kind, "payload": {}}})


def add_single(url: str, n: int) -> float:
    r = redis.Redis.from_url(url)
    r.ping()
    msgs = [_msg(i) for i in range(n)]
    t = time.perf_counter()
    for m in msgs:
        r.lpush(WAIT, m)
    return time.perf_counter() - t


async def add_async(url: str, n: int) -> float:
    r = aredis.Redis.from_url(url)
    await r.ping()
    msgs = [_msg(i) for i in range(n)]
    t = time.perf_counter()
    for m in msgs:
        await r.lpush(WAIT, m)
    dt = time.perf_counter() - t
    await r.aclose()
    return dt


def add_bulk(url: str, n: int) -> float:
    r = redis.Redis.from_url(url)
    r.ping()
    msgs = [_msg(i) for i in range(n)]
    t = time.perf_counter()
    for s in range(0, n, 100):
        with r.pipeline(transaction=False) as p:
            for m in msgs[s : s + 100]:
                p.lpush(WAIT, m)
            p.execute()
    return time.perf_counter() - t


def preload(url: str, n: int) -> None:
    r = redis.Redis.from_url(url)
    for s in range(0, n, 1000):
        r.lpush(WAIT, *[_msg(i) for i in range(s, min(n, s + 1000))])


def _body(r: redis.Redis, raw: bytes) -> None:
    # the job body: one INCR (or the latency record), after decoding the message
    if json.loads(raw)["data"]["type"] == "lat":
        jobs.lat_sync()
    else:
        r.incr(jobs.COUNTER)


def _ceiling(mode: str, n: int, workers: int = 10) -> None:
    import asyncio
    import threading

    share = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    if mode == "ceiling-async":
        async def task(k: int) -> None:
            for _ in range(k):
                await jobs.incr_async()

        async def main() -> None:
            await asyncio.gather(*(task(k) for k in share))

        asyncio.run(main())
    else:
        def run(k: int) -> None:
            for _ in range(k):
                jobs.incr_sync()

        threads = [threading.Thread(target=run, args=(k,)) for k in share]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def worker(url: str, mode: str) -> None:
    r = jobs.sync_client()
    if mode in CEILINGS:
        _ceiling(mode, int(r.llen(WAIT)))
        while True:  # stay up like a worker until the harness stops us
            time.sleep(1)
    if mode == "classic":
        while True:
            m = r.blmove(WAIT, PROCESSING, 1, "RIGHT", "LEFT")
            if m is None:
                continue
            _body(r, m)
            r.lrem(PROCESSING, 1, m)
    elif mode == "rt1":
        m = None
        while True:
            if m is None:
                m = r.blmove(WAIT, PROCESSING, 1, "RIGHT", "LEFT")
                continue
            _body(r, m)
            with r.pipeline(transaction=False) as p:
                p.lrem(PROCESSING, 1, m)
                p.blmove(WAIT, PROCESSING, 1, "RIGHT", "LEFT")
                m = p.execute()[1]
    elif mode == "batch":
        while True:
            items = r.rpop(WAIT, 100)
            if not items:
                got = r.brpop([WAIT], timeout=1)
                if got is None:
                    continue
                items = [got[1]]
            kinds = [json.loads(x)["data"]["type"] for x in items]
            n_lat = kinds.count("lat")
            for _ in range(n_lat):
                jobs.lat_sync()
            if len(items) - n_lat:
                r.incrby(jobs.COUNTER, len(items) - n_lat)
    else:
        raise ValueError(f"unknown raw mode {mode!r}")


def latency(url: str, k: int, budget: float) -> list[float]:
    r = redis.Redis.from_url(url)
    counter = iter(range(10**9))
    return jobs.latency_loop(lambda: r.lpush(WAIT, _msg(next(counter), "lat")), k, budget)


