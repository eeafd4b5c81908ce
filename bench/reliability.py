"""Costs and figures of the durability rules (issue 12), on the harness's private redis-server.

``python -m bench.reliability --bulk 1000000 --adds 5000``

* **Longest PING gap during a huge bulk add**: a separate process PINGs Redis in a loop while
  this one runs ``Queue.add_bulk`` of ``--bulk`` jobs; reported: the longest time between two
  PING replies (what every other client of Redis waits at worst), the longest single script
  call Redis itself measured (SLOWLOG), the number of script calls and the bulk's rate.
  ``--unchunked N`` runs the same with chunking off (one script call, as before) for N jobs.
* **Per-add cost of the idempotency token**: ``--adds`` single adds with the token (as
  shipped) and with the token left out (the script then skips its GET/SET), interleaved in
  3 rounds: µs per add (client wall time, medians), Redis CPU µs per add, and Redis memory
  held per token while it lives.

* **Sweeps** (issue 21): ``--sweep N`` fills the queue with N jobs, then runs ``drain``,
  ``obliterate``, ``retry_failed`` and ``clean`` on them (failed/completed jobs are made by
  a set-up script): for each, the wall time, the script calls, the longest script call
  (SLOWLOG) and the longest PING gap of another client. Run it against the old code (one
  script call per operation) for the "before" figures.

Numbers on a loaded machine are rough; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
import time
from typing import Any

import redis

from bench.harness import RedisServer, cpu_now

QUEUE = "rel"

_PINGER = textwrap.dedent("""
    import sys, time, redis
    r = redis.Redis(port=int(sys.argv[1]))
    r.ping()
    print("ready", flush=True)
    worst, n, last = 0.0, 0, time.perf_counter()
    stop = time.perf_counter() + float(sys.argv[2])
    while time.perf_counter() < stop:
        try:
            r.ping()
        except redis.ResponseError:  # BUSY: a script runs past busy-reply-threshold
            time.sleep(0.001)
            continue
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
        n += 1
        try:
            if open(sys.argv[3]).read() == "stop":
                break
        except OSError:
            pass
    print(f"{worst} {n}", flush=True)
""")


def _queue(url: str) -> Any:
    import nbqueue

    return nbqueue.Queue(QUEUE, connection=nbqueue.connect(url))


def bulk_gap(server: RedisServer, n: int, chunked: bool = True) -> dict[str, float]:
    from nbqueue.ops import jobs as ops

    r = redis.Redis(port=server.port, decode_responses=True)
    r.flushall()
    r.config_set("slowlog-log-slower-than", 1000)  # µs: every script call over 1 ms
    r.config_set("slowlog-max-len", 100_000)
    r.slowlog_reset()
    r.config_resetstat()
    q = _queue(server.url)
    items = [{"type": "t", "payload": {"i": i}} for i in range(n)]
    flag = f"{server.dir}/stop-pinger"
    with open(flag, "w") as f:
        f.write("")
    pinger = subprocess.Popen([sys.executable, "-c", _PINGER, str(server.port), "3600", flag],
                              stdout=subprocess.PIPE, text=True)
    assert pinger.stdout is not None
    pinger.stdout.readline()  # ready
    saved = ops.BULK_CHUNK_JOBS, ops.BULK_CHUNK_BYTES
    if not chunked:
        ops.BULK_CHUNK_JOBS = ops.BULK_CHUNK_BYTES = 10**12
    try:
        time.sleep(0.2)
        t = time.perf_counter()
        q.add_bulk(items)
        secs = time.perf_counter() - t
        time.sleep(0.2)
    finally:
        ops.BULK_CHUNK_JOBS, ops.BULK_CHUNK_BYTES = saved
        with open(flag, "w") as f:
            f.write("stop")
    worst, pings = pinger.stdout.readline().split()
    pinger.wait(30)
    slow = [e for e in r.slowlog_get(100_000)
            if str(e.get("command", b"")).lower().startswith(("evalsha", "eval", "b'eval"))]
    calls = int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    assert r.zcard(f"nbq:{{{QUEUE}}}:wait") == n, "not every job arrived"
    return {"jobs": n, "seconds": secs, "rate": n / secs, "script_calls": calls,
            "longest_ping_gap_ms": float(worst) * 1000, "pings": int(pings),
            "longest_script_ms": max((e["duration"] for e in slow), default=0) / 1000}


_FINISH_ALL = """
local ids = redis.call('ZRANGE', KEYS[1] .. 'wait', 0, 4999)
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1] .. ARGV[1], ARGV[3], id)
  redis.call('HSET', KEYS[1] .. 'job:' .. id, 'state', ARGV[2], 'fon', ARGV[3], 'atm', 1)
end
if #ids > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1] .. 'wait', 0, #ids - 1) end
return #ids
"""


def _pinger(server: RedisServer) -> tuple[subprocess.Popen[str], str]:
    flag = f"{server.dir}/stop-pinger"
    with open(flag, "w") as f:
        f.write("")
    pinger = subprocess.Popen([sys.executable, "-c", _PINGER, str(server.port), "3600", flag],
                              stdout=subprocess.PIPE, text=True)
    assert pinger.stdout is not None
    pinger.stdout.readline()  # ready
    return pinger, flag


def sweep(server: RedisServer, n: int) -> dict[str, dict[str, float]]:
    """drain / obliterate / retry_failed / clean of ``n`` jobs: calls, longest call, gap."""
    r = redis.Redis(port=server.port, decode_responses=True)
    r.config_set("slowlog-log-slower-than", 1000)
    r.config_set("slowlog-max-len", 100_000)
    out: dict[str, dict[str, float]] = {}
    for op, finished in (("drain", ""), ("obliterate", "completed"),
                         ("retry_failed", "failed"), ("clean", "completed")):
        r.flushall()
        q = _queue(server.url)
        for i in range(0, n, 100_000):
            q.add_bulk([{"i": j} for j in range(i, min(n, i + 100_000))])
        if finished:
            ms = int(time.time() * 1000) - 60_000
            while r.eval(_FINISH_ALL, 1, f"nbq:{{{QUEUE}}}:", finished, finished, ms):
                pass
        r.slowlog_reset()
        r.config_resetstat()
        pinger, flag = _pinger(server)
        try:
            time.sleep(0.2)
            t = time.perf_counter()
            try:
                done = (q.drain() if op == "drain" else q.obliterate() if op == "obliterate"
                        else q.retry_failed() if op == "retry_failed"
                        else q.clean(0, 0, "completed"))
            except Exception as exc:  # the old code's BUSY after a 30 s socket timeout
                print(f"{op}: raised {type(exc).__name__}: {str(exc)[:120]}", flush=True)
                done = -1
            secs = time.perf_counter() - t
            time.sleep(0.2)
        finally:
            with open(flag, "w") as f:
                f.write("stop")
        assert pinger.stdout is not None
        worst, _ = pinger.stdout.readline().split()
        pinger.wait(30)
        stats = r.info("commandstats")
        sha, ev = stats.get("cmdstat_evalsha", {}), stats.get("cmdstat_eval", {})
        slow = [e["duration"] for e in r.slowlog_get(100_000)
                if str(e.get("command", "")).upper().startswith(("EVAL", "B'EVAL"))]
        out[op] = {"jobs": float(done), "seconds": secs,
                   "script_calls": float(int(sha.get("calls", 0)) + int(ev.get("calls", 0))
                                         - int(sha.get("failed_calls", 0))),
                   "longest_script_ms": max(slow, default=0) / 1000,
                   "longest_ping_gap_ms": float(worst) * 1000}
        print(f"{op:13}: " + ", ".join(f"{k} {v:.1f}" for k, v in out[op].items()), flush=True)
        while True:  # a script the old code left running (BUSY) must end before FLUSHALL
            try:
                r.ping()
                break
            except redis.ResponseError:
                time.sleep(0.5)
    return out


def add_cost(server: RedisServer, n: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    from nbqueue.ops import jobs as ops

    r = redis.Redis(port=server.port, decode_responses=True)
    out: dict[str, list[tuple[float, float, float]]] = {"with token": [], "no token": []}
    real = ops.new_token
    for _ in range(rounds):
        for variant in ("with token", "no token"):
            r.flushall()
            q = _queue(server.url)
            q.add({"type": "warm"})
            ops.new_token = real if variant == "with token" else (lambda: "")  # type: ignore[assignment]
            try:
                mem0, cpu0 = int(r.info("memory")["used_memory"]), cpu_now(r)
                t = time.perf_counter()
                for i in range(n):
                    q.add({"type": "t", "payload": {"i": i}})
                wall = (time.perf_counter() - t) / n * 1e6
                cpu = (cpu_now(r) - cpu0) / n * 1e6
                mem = (int(r.info("memory")["used_memory"]) - mem0) / n
            finally:
                ops.new_token = real  # type: ignore[assignment]
            out[variant].append((wall, cpu, mem))
    res = {}
    for variant, rows in out.items():
        res[variant] = {"us_per_add": statistics.median(x[0] for x in rows),
                        "redis_cpu_us_per_add": statistics.median(x[1] for x in rows),
                        "redis_bytes_per_add": statistics.median(x[2] for x in rows)}
    res["token"] = {k: res["with token"][k] - res["no token"][k] for k in res["with token"]}
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__)
    p.add_argument("--bulk", type=int, default=1_000_000)
    p.add_argument("--unchunked", type=int, default=0,
                   help="also run a bulk of this many jobs with chunking off (before)")
    p.add_argument("--adds", type=int, default=5000)
    p.add_argument("--sweep", type=int, default=0,
                   help="drain/obliterate/retry_failed/clean of this many jobs")
    a = p.parse_args(argv)
    server = RedisServer().start()
    try:
        if a.sweep:
            sweep(server, a.sweep)
        if a.adds:
            for variant, row in add_cost(server, a.adds).items():
                print(f"add one at a time, {variant:10}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in row.items()), flush=True)
        if a.unchunked:
            row = bulk_gap(server, a.unchunked, chunked=False)
            print("bulk, one script call: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()),
                  flush=True)
        if a.bulk:
            row = bulk_gap(server, a.bulk)
            print("bulk, chunked:         " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()),
                  flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
