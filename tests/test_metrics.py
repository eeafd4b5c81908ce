"""Prometheus metrics read from Redis: counters, errors by type, durations, depths, history."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redisproc import free_port

from nbqueue import Queue, Worker
from nbqueue.connection import Connection
from nbqueue.metrics import QueueCollector, make_metrics_server
from nbqueue.protocol import run_sync

from .helpers import wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]



def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return parse(resp.read().decode())


def processor(job: Any) -> Any:
    """Does what the job says: ok, raise, unrec, slow (for timeouts), fail (structured)."""
    import time as _time

    from nbqueue import UnrecoverableError

    do = job.data["payload"]["do"]
    if do == "raise":
        raise ValueError("boom")
    if do == "keyerror":
        raise KeyError("missing")
    if do == "unrec":
        raise UnrecoverableError("no retry")
    if do == "slow":
        _time.sleep(1.0)
    if do == "fail":
        return {"success": False, "error": "bad input"}
    return {"success": True}


def add(q: Queue, *kinds: str, **opts: Any) -> None:
    q.add_bulk([({"type": k, "payload": {"do": k}}, opts) for k in kinds])


@pytest.fixture
def populated(conn: Connection, r: redis.Redis) -> Iterator[Connection]:
    """Jobs run by a thread worker (mq), a process worker (mp), one stalled job (ms), and
    jobs still waiting/delayed with no worker (mw)."""
    mq, mp = Queue("mq", connection=conn), Queue("mp", connection=conn)
    add(mq, "ok", "ok", "ok", "raise", "unrec", "fail")
    add(mq, "slow", timeout=50)
    add(mp, "ok", "ok", "keyerror")
    with Worker("mq", processor, connection=conn, concurrency=4, dead_letter=False), \
            Worker("mp", processor, connection=conn, mode="process", concurrency=2,
                   processes=1, dead_letter=False):
        wait_for(lambda: r.zcard("nbq:{mq}:completed") + r.zcard("nbq:{mq}:failed") == 7
                 and r.zcard("nbq:{mp}:completed") + r.zcard("nbq:{mp}:failed") == 3,
                 what="all jobs finished")
    # a job whose worker died: fetched with a short lock, never finished, swept as stalled
    ms = Queue("ms", connection=conn)
    add(ms, "ok")
    client = conn.sync()
    fetched = run_sync(client, ms._ops.fetch(1, "dead-worker", 50))
    assert len(fetched.jobs) == 1
    wait_for(lambda: run_sync(client, ms._ops.check_stalled(0, 1000))[1], 10,
             "the stalled sweep")
    mw = Queue("mw", connection=conn)
    add(mw, "ok", "ok")
    add(mw, "ok", delay=3_600_000)
    yield conn


def check_samples(s: Samples) -> None:
    assert get(s, "nbqueue_up") == 1
    ex, err = "opencell_tool_execution_total", "opencell_tool_error_total"
    assert get(s, ex, tool_name="queue_mq", status="success") == 3
    assert get(s, ex, tool_name="queue_mq", status="error") == 4
    for etype in ("ValueError", "unrecoverable", "timeout", "returned_failure"):
        assert get(s, err, tool_name="queue_mq", error_type=etype) == 1, etype
    assert get(s, ex, tool_name="queue_mp", status="success") == 2  # the process worker
    assert get(s, err, tool_name="queue_mp", error_type="KeyError") == 1
    assert get(s, ex, tool_name="queue_ms", status="error") == 1
    assert get(s, err, tool_name="queue_ms", error_type="stalled") == 1
    hist = "nbqueue_job_duration_seconds"
    assert get(s, hist + "_count", queue="mq") == 7
    assert get(s, hist + "_bucket", queue="mq", le="+Inf") == 7
    assert get(s, hist + "_count", queue="mp") == 3
    assert get(s, hist + "_bucket", queue="mq", le="0.025") <= 7
    assert get(s, hist + "_sum", queue="mq") >= 0.05  # the timed-out attempt
    depth = "nbqueue_queue_jobs"
    assert get(s, depth, queue="mq", state="completed") == 3
    assert get(s, depth, queue="mq", state="failed") == 4
    assert get(s, depth, queue="mw", state="waiting") == 2  # found without meta/stats keys
    assert get(s, depth, queue="mw", state="delayed") == 1
    assert get(s, depth, queue="mw", state="active") == 0
    assert ("nbqueue_queue_paused", frozenset({("queue", "mw")})) in s


def test_scrape_over_http_counts_thread_and_process_workers(populated: Connection) -> None:
    server = make_metrics_server(0, connection=populated)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        samples = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    check_samples(samples)


def test_serve_is_the_cli_entry_point(populated: Connection, redis_url: str) -> None:
    port = free_port()
    code = f"from nbqueue.metrics import serve; serve({port}, queues=['mq', 'mw'])"
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    try:
        def try_scrape() -> Samples | None:
            try:
                return scrape(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return None

        samples = wait_for(try_scrape, 30, "the metrics server")
    finally:
        proc.terminate()
        proc.wait(10)
    assert get(samples, "opencell_tool_execution_total", tool_name="queue_mq",
               status="success") == 3
    assert get(samples, "nbqueue_queue_jobs", queue="mw", state="waiting") == 2
    assert not [k for k in samples if ("tool_name", "queue_mp") in k[1]]  # only mq, mw


def test_collector_in_a_user_registry(populated: Connection) -> None:
    registry = CollectorRegistry()
    registry.register(QueueCollector(populated, queues=["mp"]))
    samples = parse(generate_latest(registry).decode())
    assert get(samples, "opencell_tool_execution_total", tool_name="queue_mp",
               status="error") == 1
    assert get(samples, "nbqueue_queue_jobs", queue="mp", state="completed") == 2
    assert not [k for k in samples if ("queue", "mq") in k[1]]


def test_unreachable_redis_scrapes_as_down() -> None:
    registry = CollectorRegistry()
    registry.register(QueueCollector(f"redis://127.0.0.1:{free_port()}/0"))
    samples = parse(generate_latest(registry).decode())
    assert get(samples, "nbqueue_up") == 0


def test_history_shows_completed_and_failed_per_minute(populated: Connection) -> None:
    history = Queue("mq", connection=populated).get_history(5)
    assert len(history) == 5
    assert all(m % 60_000 == 0 for m, _, _ in history)
    assert sum(c for _, c, _ in history) == 3
    assert sum(f for _, _, f in history) == 4
    assert history[-1][0] > history[0][0]
