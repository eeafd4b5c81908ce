"""Issue 5: a queue works unchanged on a 3-master Redis Cluster started by the test."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redisproc import free_port
from rhelpers import wait_until

import nbqueue
from nbqueue import Queue, Worker
from nbqueue.keys import QueueKeys
from nbqueue.server import find_redis_server

pytestmark = pytest.mark.reliability


def _binary() -> str | None:
    try:
        return find_redis_server()
    except Exception:
        return None


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    binary = _binary()
    if binary is None:
        pytest.skip("redis-server is not installed")
    cli = shutil.which("redis-cli")
    root = Path(tempfile.mkdtemp(prefix="nbq-cluster-"))
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for i in range(3):
            port = _cluster_port()
            d = root / str(i)
            d.mkdir()
            procs.append(subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no",
                 "--daemonize", "no", "--logfile", str(d / "log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            ports.append(port)
        clients = [redis.Redis(host="127.0.0.1", port=p, decode_responses=True) for p in ports]
        assert wait_until(lambda: all(_pings(c) for c in clients), 10)
        if cli:
            subprocess.run([cli, "--cluster", "create",
                            *[f"127.0.0.1:{p}" for p in ports], "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
        else:  # by hand: split the slots, then MEET
            for i, c in enumerate(clients):
                lo, hi = i * 16384 // 3, (i + 1) * 16384 // 3 - 1
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for c in clients[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])
        assert wait_until(lambda: all(
            c.execute_command("CLUSTER", "INFO").find("cluster_state:ok") >= 0
            for c in clients), 30)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def _cluster_port() -> int:
    """A free port whose cluster-bus twin (port + 10000) is free too."""
    import socket

    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _pings(c: redis.Redis) -> bool:
    try:
        return bool(c.ping())
    except redis.RedisError:
        return False


def test_cluster_queue_features(cluster_url):
    conn = nbqueue.connect(cluster_url)
    assert conn.cluster
    # the queue and the dead-letter queue live in different slots (maybe different nodes)
    from redis.cluster import key_slot

    assert key_slot(QueueKeys("cq").wait.encode()) != key_slot(
        QueueKeys("dead_letter").wait.encode())
    q = Queue("cq", conn, rate_limiter={"max": 20, "duration": 1000})
    seen: list[tuple[str, float]] = []
    tries: dict[str, int] = {}
    lock = threading.Lock()

    def work(job):  # type: ignore[no-untyped-def]
        kind = job.data["payload"]["kind"]
        with lock:
            seen.append((job.id, time.monotonic()))
            tries[job.id] = tries.get(job.id, 0) + 1
            n = tries[job.id]
        if kind == "flaky" and n < 3:
            raise RuntimeError(f"try {n}")
        if kind == "bad":
            raise nbqueue.UnrecoverableError("bad job")
        return {"kind": kind, "n": n}

    w = Worker("cq", work, conn, concurrency=4).start()
    try:
        t0 = time.monotonic()
        plain = q.add_bulk([{"type": "p", "payload": {"kind": "plain"}} for _ in range(40)])
        flaky = q.add({"type": "f", "payload": {"kind": "flaky"}}, attempts=3, backoff=50)
        delayed = q.add({"type": "d", "payload": {"kind": "delayed"}}, delay=1500)
        bad = q.add({"type": "b", "payload": {"kind": "bad"}}, job_id="bad:{x}:é")
        assert plain[0].result(timeout=30) == {"kind": "plain", "n": 1}
        assert flaky.result(timeout=30) == {"kind": "flaky", "n": 3}
        assert delayed.result(timeout=30)["kind"] == "delayed"
        with pytest.raises(nbqueue.JobFailedError):
            bad.result(timeout=30)
        assert wait_until(lambda: q.get_metrics().completed == 42, 30), q.get_metrics()
        times = {jid: t for jid, t in seen}
        assert times[delayed.id] - t0 >= 1.4
        # rate limit: 20 per 1 s window -> the 40 plain jobs need a second window. The window
        # opens at the first fetch, a moment before the first body starts, so the first and
        # last starts are a full window apart minus that moment (a limiter property, not speed).
        plain_times = sorted(t for jid, t in seen if jid in {j.id for j in plain})
        assert plain_times[-1] - plain_times[0] >= 0.9
        # the dead-letter queue (another slot) recorded the failure
        dlq = Queue("dead_letter", conn)
        assert wait_until(lambda: dlq.get_metrics().waiting >= 1, 10)
        entry = dlq.get_jobs("waiting")[0]
        assert entry.data["payload"]["job_id"] == bad.id
        assert entry.data["payload"]["queue"] == "cq"
    finally:
        w.stop()
    assert w.processed >= 42


def test_cluster_async_blpop_marker(cluster_url):
    """An idle asyncio worker blocks on the marker list with BLPOP and wakes on add."""
    conn = nbqueue.connect(cluster_url)
    keys = QueueKeys("cq-blpop")

    async def main() -> float:
        client = conn.new_async()
        try:
            t = time.monotonic()
            assert await client.blpop([keys.marker], timeout=0.5) is None  # times out
            assert time.monotonic() - t >= 0.4
            waiter = asyncio.ensure_future(client.blpop([keys.marker], timeout=5))
            await asyncio.sleep(0.3)
            from nbqueue.aio import Queue as AQueue

            aq = AQueue("cq-blpop", conn)
            t = time.monotonic()
            await aq.add({"type": "x"})
            got = await waiter
            assert got is not None and got[0] == keys.marker
            return time.monotonic() - t
        finally:
            await client.aclose()

    assert asyncio.run(main()) < 2


def test_cluster_asyncio_worker(cluster_url):
    conn = nbqueue.connect(cluster_url)
    q = Queue("cq-aio", conn)

    async def work(job):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.01)
        return job.data["payload"] * 2

    async def main() -> list[int]:
        w = nbqueue.aio.Worker("cq-aio", work, conn, concurrency=5)
        await w.start()
        try:
            await asyncio.sleep(0.5)  # idle: blocked on the marker
            jobs = q.add_bulk([{"type": "n", "payload": i} for i in range(20)])
            from nbqueue.aio import Queue as AQueue

            aq = AQueue("cq-aio", conn)
            return [await (await aq.get_job(j.id)).result(timeout=20) for j in jobs]
        finally:
            await w.stop()

    assert asyncio.run(main()) == [2 * i for i in range(20)]


def test_cluster_recurring_jobs(cluster_url):
    schedule = getattr(nbqueue, "schedule_recurring_job", None)
    if schedule is None:
        pytest.skip("nbqueue.schedule_recurring_job is not implemented yet (cron part of "
                    "issue 5 not testable)")
    conn = nbqueue.connect(cluster_url)
    q = Queue("cq-cron", conn)
    runs: list[float] = []
    w = Worker("cq-cron", lambda job: runs.append(time.monotonic()), conn,
               concurrency=2).start()
    try:
        info = schedule(q, {"type": "tick", "payload": {}}, every=500, scheduler_id="t")
        again = schedule(q, {"type": "tick", "payload": {}}, every=500, scheduler_id="t")
        assert info.id == again.id if hasattr(info, "id") else True
        assert wait_until(lambda: len(runs) >= 3, 15), runs
        if hasattr(nbqueue, "remove_scheduler"):
            nbqueue.remove_scheduler(q, "t")
    finally:
        w.stop()


def test_cluster_global_concurrency_and_deduplication(cluster_url):
    """Issue 13 on a 3-master cluster: the global limit holds for two workers, dedup keys,
    promote, priority changes and the worker registry live in the queue's slot."""
    conn = nbqueue.connect(cluster_url)
    q = Queue("cq-ctl", conn, global_concurrency=2)
    lock = threading.Lock()
    running = [0, 0]

    def work(job):  # type: ignore[no-untyped-def]
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        time.sleep(0.03)
        with lock:
            running[0] -= 1
        return job.data["payload"]

    # deduplication: throttle, until-finished, debounce (delayed + extend + replace)
    first = q.add({"type": "d", "payload": 1}, deduplication={"id": "k", "ttl": 60_000})
    assert q.add({"type": "d", "payload": 2}, deduplication={"id": "k", "ttl": 60_000}).id \
        == first.id
    assert q.get_deduplication_job_id("k") == first.id
    once = q.add({"type": "d", "payload": 3}, deduplication={"id": "once"})
    deb = {"id": "deb", "ttl": 60_000, "extend": True, "replace": True}
    slow = q.add({"type": "d", "payload": "a"}, delay=60_000, deduplication=deb)
    assert q.add({"type": "d", "payload": "b"}, delay=60_000, deduplication=deb).id == slow.id
    slow.change_priority(1)
    slow.promote()
    lifo = q.add({"type": "d", "payload": "lifo"}, lifo=True)
    q.add_bulk([{"type": "p", "payload": i} for i in range(20)])
    workers = [Worker("cq-ctl", work, conn, concurrency=4).start() for _ in range(2)]
    try:
        # the worker registry lives in the queue's slot too
        assert wait_until(lambda: {w.id for w in q.get_workers()}
                          == {w.engine.token for w in workers}, 30)
        assert slow.result(timeout=30) == "b"
        assert once.result(timeout=30) == 3
        assert lifo.result(timeout=30) == "lifo"
        assert wait_until(lambda: q.get_metrics().completed == 24, 60), q.get_metrics()
        assert q.get_deduplication_job_id("once") is None  # released when it finished
        assert q.add({"type": "d"}, deduplication={"id": "once"}).id != once.id
    finally:
        for w in workers:
            w.stop()
    assert running[1] == 2
    assert q.get_workers() == []


def test_cluster_registry_of_queue_names_and_scrape(cluster_url):
    """The registry key lives in another slot than every queue: it is written beside the
    add (never inside a queue's script), and a scrape reads it, then each queue's slot."""
    from prometheus_client import CollectorRegistry, generate_latest
    from redis.cluster import key_slot

    from nbqueue.keys import registry_key
    from nbqueue.metrics import QueueCollector

    conn = nbqueue.connect(cluster_url)
    names = ["reg-a", "reg-b", "reg-c"]
    assert len({key_slot(registry_key().encode())} | {
        key_slot(QueueKeys(n).wait.encode()) for n in names}) == 4
    for i, name in enumerate(names):
        Queue(name, conn).add_bulk([{"type": "t"}] * (i + 1))
    client = conn.sync()
    assert set(names) <= set(client.smembers(registry_key()))
    registry = CollectorRegistry()
    registry.register(QueueCollector(conn))
    text = generate_latest(registry).decode()
    assert "nbqueue_up 1.0" in text
    for i, name in enumerate(names):
        assert f'nbqueue_queue_jobs{{queue="{name}",state="waiting"}} {float(i + 1)}' in text
    Queue("reg-b", conn).obliterate()
    assert "reg-b" not in set(client.smembers(registry_key()))


def test_the_data_plane_on_a_cluster(cluster_url: str) -> None:
    """Issue 19 item 2: the default Redis store works on a cluster (artifacts in the queue's
    slot): Arrow chunks, a frame result, a named batch, and artifacts gone with the jobs."""
    import pandas as pd

    from nbqueue import chunk_frame

    conn = nbqueue.connect(cluster_url)
    q = Queue("cl-frames", conn)
    df = pd.DataFrame({"city": pd.Categorical(["a", "b"] * 50),
                       "n": pd.array(range(100), dtype="Int64")},
                      index=pd.RangeIndex(10, 110, name="row"))
    batch = q.map(df, chunksize=25, name="cl")
    with Worker(q.name, lambda job: chunk_frame(job).assign(m=lambda f: f["n"] * 2), conn,
                concurrency=2):
        frame = batch.results_frame(timeout=60)
    pd.testing.assert_frame_equal(frame, df.assign(m=df["n"] * 2), check_index_type=True)
    assert [j.id for j in q.get_batch("cl")] == [j.id for j in batch]
    assert [j.id for j in q.map(df, chunksize=25, name="cl")] == [j.id for j in batch]
    base = QueueKeys(q.name).base
    client = conn.sync()
    node = client.get_node_from_key(base + "art:x")
    assert len(list(client.scan_iter(match=base + "art:*", target_nodes=node))) == 4
    q.obliterate(force=True)
    assert list(client.scan_iter(match=base + "art:*", target_nodes=node)) == []
