"""contrib/keda: the Redis scaler's key and command against the real test redis, and the
worker a ScaledJob pod runs (``nbqueue worker ... --exit-when-idle``). The Prometheus
queries are checked by tests/test_prometheus.py against a real Prometheus."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from nbqueue import Queue
from nbqueue.connection import Connection

KEDA = Path(__file__).resolve().parent.parent / "contrib" / "keda"


def redis_triggers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(KEDA.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for trigger in (doc or {}).get("spec", {}).get("triggers", []):
                if trigger["type"] in ("redis", "redis-sentinel"):
                    out.append((path.name, trigger["metadata"]))
    return out


def scaler_length(r: redis.Redis, key: str) -> int:
    """What KEDA's redis scaler reads: the key's TYPE, then LLEN / ZCARD / SCARD / HLEN
    (its documented list, set, sorted set and hash support)."""
    kind = r.type(key)
    command = {"list": "LLEN", "none": "LLEN", "zset": "ZCARD", "set": "SCARD",
               "hash": "HLEN"}[kind]
    return int(r.execute_command(command, key))


def test_the_redis_scaler_counts_the_waiting_jobs(conn: Connection, r: redis.Redis) -> None:
    triggers = redis_triggers()
    assert {name for name, _ in triggers} == {"scaledobject-redis.yaml",
                                              "scaledjob-redis.yaml"}
    q = Queue("reports", conn)
    q.obliterate(force=True)
    q.add_bulk([{"type": "t"}] * 3 + [{"type": "t", "payload": 1}], priority=2)
    q.add({"type": "t"}, delay=60_000)  # delayed: not ready, not counted
    for name, meta in triggers:
        key = meta["listName"]
        assert key == "nbq:{reports}:wait", name
        assert r.type(key) == "zset"
        assert scaler_length(r, key) == 4 == q.get_metrics().waiting, name
        assert int(meta.get("databaseIndex", 0)) == 0
    q.drain(delayed=True)
    assert scaler_length(r, "nbq:{reports}:wait") == 0  # drained: the key is gone or empty


def echo(job: Any) -> Any:
    return job.data.get("payload")


def test_a_scaledjob_worker_drains_and_exits(conn: Connection, redis_url: str) -> None:
    q = Queue("keda_job", conn)
    q.obliterate(force=True)
    q.add_bulk([{"type": "t", "payload": i} for i in range(5)])
    env = dict(os.environ, NBQUEUE_REDIS_URL=redis_url,
               PYTHONPATH=os.pathsep.join([str(KEDA.parent.parent), os.environ.get(
                   "PYTHONPATH", "")]))
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "nbqueue", "worker", "keda_job", "--processor",
         "tests.test_keda:echo", "--exit-when-idle", "1"],
        capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "idle for 1 s, exiting" in proc.stdout
    assert q.get_metrics().completed == 5 and time.monotonic() - t0 < 30
