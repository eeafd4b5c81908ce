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
from nbqueue.metrics import SERIES, QueueCollector, make_metrics_server
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
    assert get(s, ex, tool_name="queue_mq", queue="mq", status="success") == 3
    assert get(s, ex, tool_name="queue_mq", queue="mq", status="error") == 4
    for etype in ("ValueError", "unrecoverable", "timeout", "returned_failure"):
        assert get(s, err, tool_name="queue_mq", queue="mq", error_type=etype) == 1, etype
    # the process worker
    assert get(s, ex, tool_name="queue_mp", queue="mp", status="success") == 2
    assert get(s, err, tool_name="queue_mp", queue="mp", error_type="KeyError") == 1
    assert get(s, ex, tool_name="queue_ms", queue="ms", status="error") == 1
    assert get(s, err, tool_name="queue_ms", queue="ms", error_type="stalled") == 1
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
    assert get(samples, "opencell_tool_execution_total", tool_name="queue_mq", queue="mq",
               status="success") == 3
    assert get(samples, "nbqueue_queue_jobs", queue="mw", state="waiting") == 2
    assert not [k for k in samples if ("tool_name", "queue_mp") in k[1]]  # only mq, mw


def test_collector_in_a_user_registry(populated: Connection) -> None:
    registry = CollectorRegistry()
    registry.register(QueueCollector(populated, queues=["mp"]))
    samples = parse(generate_latest(registry).decode())
    assert get(samples, "opencell_tool_execution_total", tool_name="queue_mp", queue="mp",
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


# -- labels, describe, HELP ------------------------------------------------------------
def test_every_queue_series_carries_the_queue_label(populated: Connection) -> None:
    registry = CollectorRegistry()
    registry.register(QueueCollector(populated))
    text = generate_latest(registry).decode()
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= {n for n, *_ in SERIES} - {"nbqueue_up"}
    for family in families:
        for sample in family.samples:
            if sample.name != "nbqueue_up":
                assert "queue" in sample.labels, sample
    # the seed's counters keep their label, and agree with it
    for family in families:
        for sample in family.samples:
            if "tool_name" in sample.labels:
                assert sample.labels["tool_name"] == f"queue_{sample.labels['queue']}"
    # so one query can join a seed counter with an nbqueue series on `queue`
    s = parse(text)
    assert get(s, "nbqueue_jobs_finished_total", queue="mq", state="failed") == get(
        s, "opencell_tool_execution_total", tool_name="queue_mq", queue="mq", status="error")


def test_describe_makes_a_registry_refuse_clashing_names(conn: Connection) -> None:
    from prometheus_client import Counter

    collector = QueueCollector(conn)
    assert {m.name for m in collector.describe()} == {n for n, *_ in SERIES}
    registry = CollectorRegistry(auto_describe=False)  # describe() alone must name them
    Counter("opencell_tool_execution", "the user's own", registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(collector)
    other = CollectorRegistry()
    other.register(QueueCollector(conn))
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("nbqueue_job_retries", "clash the other way", registry=other)


def test_describe_does_not_touch_redis() -> None:
    collector = QueueCollector(f"redis://127.0.0.1:{free_port()}/0")
    CollectorRegistry(auto_describe=True).register(collector)  # no Redis behind it: fine


def test_help_texts_say_what_is_counted(conn: Connection, r: redis.Redis) -> None:
    """retry_failed() re-runs failed jobs: the finish and error counters count the second
    failure again while the failed gauge holds each job once, as their HELP says."""
    q = Queue("twice", connection=conn)
    add(q, "raise", "raise")
    for _ in range(2):
        with Worker("twice", processor, connection=conn, dead_letter=False):
            wait_for(lambda: r.zcard("nbq:{twice}:failed") == 2, what="both failed")
        if _ == 0:
            assert q.retry_failed() == 2
    registry = CollectorRegistry()
    registry.register(QueueCollector(conn, ["twice"]))
    text = generate_latest(registry).decode()
    s = parse(text)
    assert get(s, "opencell_tool_execution_total", tool_name="queue_twice", queue="twice",
               status="error") == 4
    assert get(s, "opencell_tool_error_total", tool_name="queue_twice", queue="twice",
               error_type="ValueError") == 4
    assert get(s, "nbqueue_queue_jobs", queue="twice", state="failed") == 2
    helps = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert "not distinct jobs" in helps["opencell_tool_execution"]
    assert "retry_failed()" in helps["opencell_tool_execution"]
    assert "every failed attempt counts" in helps["opencell_tool_error"]


# -- new series ------------------------------------------------------------------------
def test_depth_per_priority_and_oldest_waiting_age(conn: Connection, r: redis.Redis) -> None:
    q = Queue("prio", connection=conn)
    q.add_bulk([({"type": "t"}, {"priority": p}) for p in (1, 2, 2, 5, 5, 5)])
    q.add({"type": "t"}, delay=3_600_000)  # delayed: not waiting
    q.add({"type": "t"}, priority=2, lifo=True)  # scores below its level's FIFO jobs
    q.add({"type": "t"}, priority=5, lifo=True)
    registry = CollectorRegistry()
    registry.register(QueueCollector(conn, ["prio"]))
    s = parse(generate_latest(registry).decode())
    w = "nbqueue_queue_waiting_jobs"
    assert [get(s, w, queue="prio", priority=p)
            for p in ("critical", "high", "normal", "low", "background")] == [1, 3, 0, 0, 4]
    assert get(s, "nbqueue_queue_oldest_waiting_seconds", queue="prio") < 60
    # the job next in line at BACKGROUND was added two hours ago (server clock)
    head = r.zrangebyscore("nbq:{prio}:wait", 5 * 2**40, 6 * 2**40, start=0, num=1)[0]
    sec, _ = r.time()
    r.hset(f"nbq:{{prio}}:job:{head}", "ts", (sec - 7200) * 1000)
    s = parse(generate_latest(registry).decode())
    assert 7200 <= get(s, "nbqueue_queue_oldest_waiting_seconds", queue="prio") < 7300
    # an older lifo job (the last of its level's lifo part) counts too
    lifo = r.zrevrangebyscore("nbq:{prio}:wait", "(" + str(2 * 2**40), 1.5 * 2**40,
                              start=0, num=1)[0]
    assert r.hget(f"nbq:{{prio}}:job:{lifo}", "lifo") == "1"
    r.hset(f"nbq:{{prio}}:job:{lifo}", "ts", (sec - 9000) * 1000)
    s = parse(generate_latest(registry).decode())
    assert 9000 <= get(s, "nbqueue_queue_oldest_waiting_seconds", queue="prio") < 9100
    q.drain()
    s = parse(generate_latest(registry).decode())
    assert get(s, "nbqueue_queue_oldest_waiting_seconds", queue="prio") == 0


def test_wait_time_histogram_and_retries_counter(conn: Connection, r: redis.Redis) -> None:
    q = Queue("wt", connection=conn, default_job_options={"attempts": 3})
    add(q, "ok", "ok", "ok")
    add(q, "raise")  # 3 attempts: 2 retries, then failed
    # a job that waits two hours in the server's eyes before its first start
    old = q.add({"type": "ok", "payload": {"do": "ok"}})
    sec, _ = r.time()
    r.hset(f"nbq:{{wt}}:job:{old.id}", "ts", (sec - 7200) * 1000)
    with Worker("wt", processor, connection=conn, concurrency=2, dead_letter=False):
        wait_for(lambda: r.zcard("nbq:{wt}:completed") == 4
                 and r.zcard("nbq:{wt}:failed") == 1, what="all finished")
    registry = CollectorRegistry()
    registry.register(QueueCollector(conn, ["wt"]))
    s = parse(generate_latest(registry).decode())
    h = "nbqueue_job_wait_seconds"
    assert get(s, h + "_count", queue="wt") == 5  # first attempts only, not the retries
    assert get(s, h + "_bucket", queue="wt", le="+Inf") == 5
    assert get(s, h + "_bucket", queue="wt", le="3600.0") == 4  # all but the old one
    assert get(s, h + "_sum", queue="wt") >= 7200
    assert get(s, "nbqueue_job_retries_total", queue="wt") == 2
    assert get(s, "nbqueue_job_duration_seconds_count", queue="wt") == 7  # every attempt


def test_wait_buckets_are_cumulative_in_the_scrape() -> None:
    from collections import Counter

    from nbqueue.metrics import families
    from nbqueue.stats import record_wait

    stats: Counter[str] = Counter()
    for ms in (0, 4, 6, 2_000, 7_200_000, -1):  # -1: a later attempt, not counted
        record_wait(stats, ms)
    data = {"q": {"stats": dict(stats), "states": dict.fromkeys(
        ("waiting", "active", "delayed", "completed", "failed"), 0), "paused": False,
        "schedulers": 0, "priorities": {}, "oldest_waiting_s": 0.0, "workers": 0}}
    wait = next(f for f in families(data) if f.name == "nbqueue_job_wait_seconds")
    buckets = {s.labels["le"]: s.value for s in wait.samples if s.name.endswith("_bucket")}
    assert buckets["0.005"] == 2 and buckets["0.01"] == 3 and buckets["2.5"] == 4
    assert buckets["3600.0"] == 4 and buckets["+Inf"] == 5
    total = next(s.value for s in wait.samples if s.name.endswith("_sum"))
    assert total == pytest.approx(7202.01)


def test_stalled_failures_count_in_the_history(populated: Connection) -> None:
    history = Queue("ms", connection=populated).get_history(5)
    assert sum(f for _, _, f in history) == 1


# -- the registry of queue names -------------------------------------------------------
def test_registry_lists_queues_from_adds_schedulers_and_settings(
        conn: Connection, r: redis.Redis) -> None:
    from nbqueue import aio, schedule_recurring_job

    Queue("added", connection=conn).add({"type": "t"})
    Queue("limited", connection=conn, rate_limiter={"max": 1, "duration": 1000}).get_metrics()
    schedule_recurring_job(Queue("sched", connection=conn), {"type": "t"}, every=60_000)

    async def aio_add() -> None:
        await aio.Queue("async_added", connection=conn).add({"type": "t"})

    import asyncio

    asyncio.run(aio_add())
    assert r.smembers("nbq:queues") == {"added", "limited", "sched", "async_added"}
    Queue("added", connection=conn).obliterate()
    assert "added" not in r.smembers("nbq:queues")


def test_scrape_and_stats_read_the_registry_not_the_keyspace(
        conn: Connection, r: redis.Redis, redis_url: str) -> None:
    from nbqueue.cli import main

    Queue("listed", connection=conn).add({"type": "t"})
    # keys of a queue that is not in the registry are not looked for (no SCAN)
    r.set("nbq:{unlisted}:ctr", 1)
    r.zadd("nbq:{unlisted}:wait", {"1": 1})
    registry = CollectorRegistry()
    registry.register(QueueCollector(conn))
    s = parse(generate_latest(registry).decode())
    assert get(s, "nbqueue_queue_jobs", queue="listed", state="waiting") == 1
    assert not [k for k in s if ("queue", "unlisted") in k[1]]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--url", redis_url, "stats"]) == 0
    assert "listed" in out.getvalue() and "unlisted" not in out.getvalue()


def test_an_empty_registry_is_rebuilt_by_one_scan(conn: Connection, r: redis.Redis) -> None:
    """Data written before the registry existed: the first scrape finds it and fills it."""
    Queue("old1", connection=conn).add({"type": "t"})
    Queue("old2", connection=conn).add({"type": "t"})
    r.delete("nbq:queues")
    registry = CollectorRegistry()
    registry.register(QueueCollector(conn))
    s = parse(generate_latest(registry).decode())
    assert get(s, "nbqueue_queue_jobs", queue="old2", state="waiting") == 1
    assert r.smembers("nbq:queues") == {"old1", "old2"}


def test_a_queue_obliterated_elsewhere_comes_back_with_the_next_add(
        conn: Connection, r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbqueue.ops import base as ops

    producer = Queue("back", connection=conn)
    producer.add({"type": "t"})
    Queue("back", connection=conn).obliterate()  # another object (or process)
    producer.add({"type": "t"})  # registered less than a minute ago: not re-sent
    assert "back" not in r.smembers("nbq:queues")
    monkeypatch.setattr(ops, "REGISTER_EVERY_S", 0.0)
    producer.add({"type": "t"})
    assert "back" in r.smembers("nbq:queues")


def test_workers_online_from_the_worker_registry(conn: Connection, r: redis.Redis) -> None:
    q = Queue("fleet", connection=conn)
    info = {"host": "h", "pid": 1, "mode": "thread", "concurrency": 2}
    q._run(q._ops.heartbeat("w-1", 60_000, info, 0))
    q._run(q._ops.heartbeat("w-2", 60_000, info, 1))
    q._run(q._ops.heartbeat("w-dead", 1, info, 0))  # expired at once
    assert "fleet" in r.smembers("nbq:queues")  # a queue with workers and no job yet
    registry = CollectorRegistry()
    registry.register(QueueCollector(conn))
    wait_for(lambda: get(parse(generate_latest(registry).decode()),
                         "nbqueue_workers_online", queue="fleet") == 2, what="w-dead expiry")
    q._run(q._ops.deregister("w-1"))
    s = parse(generate_latest(registry).decode())
    assert get(s, "nbqueue_workers_online", queue="fleet") == 1


def test_finished_counters_are_the_history_as_counters(populated: Connection) -> None:
    """nbqueue_jobs_finished_total holds the same totals as the per-minute history (its
    increase over a minute is that minute's row), stalled failures included."""
    registry = CollectorRegistry()
    registry.register(QueueCollector(populated))
    s = parse(generate_latest(registry).decode())
    for name in ("mq", "mp", "ms"):
        history = Queue(name, connection=populated).get_history(10)
        assert get(s, "nbqueue_jobs_finished_total", queue=name, state="completed") == sum(
            c for _, c, _ in history), name
        assert get(s, "nbqueue_jobs_finished_total", queue=name, state="failed") == sum(
            f for _, _, f in history), name
