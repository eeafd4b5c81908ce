"""The cost of replicated acknowledgements and of failover-safe ids, on a real primary with
one real replica (two private redis-servers on loopback).

``python -m bench.replicas --adds 2000 --rounds 5``

Rows (µs per job over interleaved rounds: client wall time and the primary's CPU, medians;
the add script's own time in Redis from commandstats, best round: the figure least
disturbed by other load):

* ``min_replicas=0`` -- single adds as shipped (the add returns on the primary's reply);
* ``min_replicas=1`` -- single adds that return once the replica holds them (``WAIT 1``
  in the add's own pipeline): one more command and the replica's round trip;
* the same two for ``add_bulk`` of ``--bulk`` jobs per call (one WAIT per call), per job;
* ``ids: label lookup off`` -- single adds with the fresh-id label lookup of
  scripts/includes/ids.lua stubbed out (``HMGET`` + ``GET`` per add call, and
  ``INFO replication`` at most twice a second per queue): the difference to
  ``min_replicas=0`` is what failover-safe ids cost every add.

Numbers on a loaded machine are rough; compare the rows of one run.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import tempfile
import time

import redis

from bench.harness import cpu_now, free_port
from nbqueue import Queue, connect, scripts


def _server(port: int, *extra: str) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found on PATH")
    d = tempfile.mkdtemp(prefix="nbq-bench-repl-")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", d, "--daemonize", "no",
                             "--repl-diskless-sync-delay", "0", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    for _ in range(200):
        try:
            r.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def _unlabelled_add() -> None:
    """Replace the cached add script by one whose id_label() returns '' at once."""
    base = scripts.get("add")
    source = base.source.replace("local function id_label()\n",
                                 "local function id_label()\n  do return '' end\n", 1)
    assert source != base.source
    scripts._CACHE["add"] = scripts.Script("add", source,
                                           hashlib.sha1(source.encode()).hexdigest())


def _restore_add() -> None:
    scripts._CACHE.pop("add", None)


def _run(q: Queue, r: redis.Redis, adds: int, bulk: int) -> tuple[float, float, float]:
    """µs per job: wall, primary CPU, and the add script's own time (Redis commandstats:
    EVALSHA usec, which includes the commands it runs; load-independent)."""
    r.config_resetstat()
    cpu0, t0 = cpu_now(r), time.perf_counter()
    if bulk > 1:
        for _ in range(adds // bulk):
            q.add_bulk([{"type": "t"}] * bulk)
    else:
        for _ in range(adds):
            q.add({"type": "t"})
    wall, cpu = time.perf_counter() - t0, cpu_now(r) - cpu0
    stats = r.info("commandstats")
    script_us = sum(float(v["usec"]) for k, v in stats.items()
                    if k in ("cmdstat_evalsha", "cmdstat_eval"))
    jobs = (adds // bulk) * bulk if bulk > 1 else adds
    q.drain()
    return wall / jobs * 1e6, cpu / jobs * 1e6, script_us / jobs


def _lookup_cost(r: redis.Redis, rounds: int = 7, n: int = 20000) -> float:
    """Redis µs per call of the label lookup alone (includes/ids.lua's id_label() in a
    script, minus an empty script), pipelined, the minimum over ``rounds``: the figure
    least disturbed by other load on the machine. (Its INFO check is cached for 500 ms, so
    this is mostly the cached path: HMGET + GET.)"""
    from importlib import resources

    ids = resources.files("nbqueue.scripts").joinpath("includes/ids.lua").read_text()
    head = ("local BASE = KEYS[1]\nlocal K_META = BASE .. 'meta'\n"
            "local t = redis.call('TIME')\n"
            "local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
            "local function fmt(n) return string.format('%.0f', n) end\n")
    with_lookup = r.script_load(head + ids + "\nreturn id_label()")
    empty = r.script_load(head + "return ''")
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, sha in (("lookup", with_lookup), ("empty", empty)):
            r.config_resetstat()
            pipe = r.pipeline(transaction=False)
            for _ in range(n):
                pipe.evalsha(sha, 1, "nbq:{bench-ids}:")
            pipe.execute()
            us = float(r.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
            best[name] = min(best.get(name, us), us)
    return best["lookup"] - best["empty"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    p.add_argument("--adds", type=int, default=3000, help="single adds per row and round")
    p.add_argument("--bulk", type=int, default=100, help="jobs per add_bulk call")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    pport, rport = free_port(), free_port()
    procs = [_server(pport)]
    procs.append(_server(rport, "--replicaof", "127.0.0.1", str(pport)))
    try:
        r = redis.Redis(port=pport, decode_responses=True)
        deadline = time.monotonic() + 15
        while r.info("replication").get("connected_slaves", 0) < 1:
            if time.monotonic() > deadline:
                raise SystemExit("the replica did not connect")
            time.sleep(0.05)
        url = f"redis://127.0.0.1:{pport}/0"
        q0 = Queue("repl", connect(url))
        q1 = Queue("repl", connect(url, min_replicas=1))
        for q in (q0, q1):  # warm up (scripts loaded, registration done)
            for _ in range(200):
                q.add({"type": "t"})
            q.drain()
        def unlabelled() -> tuple[float, float, float]:
            _unlabelled_add()
            try:
                return _run(q0, r, a.adds, 1)
            finally:
                _restore_add()

        plan = [("add, min_replicas=0", lambda: _run(q0, r, a.adds, 1)),
                ("add, min_replicas=1", lambda: _run(q1, r, a.adds, 1)),
                (f"add_bulk({a.bulk}), min_replicas=0, per job",
                 lambda: _run(q0, r, a.adds * 10, a.bulk)),
                (f"add_bulk({a.bulk}), min_replicas=1, per job",
                 lambda: _run(q1, r, a.adds * 10, a.bulk)),
                ("add, min_replicas=0, ids: label lookup off", unlabelled)]
        rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in plan}
        for i in range(a.rounds):  # the order rotates from round to round
            for name, run in plan[i % len(plan):] + plan[:i % len(plan)]:
                rows[name].append(run())
        lookup = _lookup_cost(r)
        version = r.info("server")["redis_version"]
        print(f"redis {version}, primary + 1 replica on loopback, {a.adds} adds x "
              f"{a.rounds} rounds (medians)\n")
        print("| row | µs per job (wall, median) | primary CPU µs per job (median) "
              "| add script µs per job (Redis, best round) |")
        print("| --- | ---: | ---: | ---: |")
        for name, vals in rows.items():
            wall, cpu = (statistics.median(v[i] for v in vals) for i in range(2))
            script = min(v[2] for v in vals)  # the least disturbed round
            print(f"| {name} | {wall:.1f} | {cpu:.1f} | {script:.2f} |")
        print(f"\nthe fresh-id label lookup alone (in a script, min of 7 rounds): "
              f"{lookup:.2f} µs of Redis time per add call")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
