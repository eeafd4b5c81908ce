"""Issue 12 items 1, 4 and 8: exactly-once enqueue across client re-sends, chunked bulk adds,
and timestamps from the Redis server's clock.

The frozen-Redis tests SIGSTOP a private redis-server while a producer's ``add`` is in
flight. The client's read times out (``SOCKET_TIMEOUT``, shortened here so the test takes
seconds, not the default 30 s), redis-py reconnects and re-sends the same script call, and
after SIGCONT Redis runs both the original (still in its socket buffer) and the re-send.
Before idempotency tokens that stored every job twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redisproc import RedisProcess
from rhelpers import check_states

import nbqueue.aio
from nbqueue import Queue, connect, connection
from nbqueue.ops import jobs as ops

pytestmark = pytest.mark.reliability

FREEZE_S = 4.0


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # 1.5 s read timeout: the add times out during the freeze and redis-py re-sends it
    monkeypatch.setattr(connection, "SOCKET_TIMEOUT", 1.5)
    yield


def _frozen(server: RedisProcess, seconds: float) -> threading.Thread:
    """SIGSTOP the server now; a thread sends SIGCONT after ``seconds``."""
    assert server.proc is not None
    pid = server.proc.pid
    import os

    os.kill(pid, signal.SIGSTOP)

    def thaw() -> None:
        time.sleep(seconds)
        os.kill(pid, signal.SIGCONT)

    t = threading.Thread(target=thaw, daemon=True)
    t.start()
    return t


def _evalsha_calls(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + \
        int(stats.get("cmdstat_eval", {}).get("calls", 0))


def test_add_resent_during_a_freeze_stores_one_job(fresh_server: RedisProcess,
                                                   short_timeouts: None) -> None:
    r = fresh_server.client()
    conn = connect(fresh_server.url)
    q = Queue("once", conn)
    q.add({"type": "warm"})  # script loaded, connection pooled
    before = _evalsha_calls(r)
    thaw = _frozen(fresh_server, FREEZE_S)
    job = q.add({"type": "t", "payload": {"n": 1}})  # times out, re-sent, both run
    thaw.join()
    # the call really was sent more than once (else this test would prove nothing)
    assert _evalsha_calls(r) - before >= 2
    assert r.zcard("nbq:{once}:wait") == 2  # warm + one
    assert r.get("nbq:{once}:ctr") == "2"
    assert q.get_job(job.id) is not None and q.get_job(job.id).data["payload"] == {"n": 1}
    assert check_states(r, "once") == []
    conn.close()


def test_bulk_add_resent_during_a_freeze_stores_each_job_once(
        fresh_server: RedisProcess, short_timeouts: None) -> None:
    r = fresh_server.client()
    conn = connect(fresh_server.url)
    q = Queue("bulk-once", conn)
    q.add({"type": "warm"})
    before = _evalsha_calls(r)
    thaw = _frozen(fresh_server, FREEZE_S)
    jobs = q.add_bulk([{"type": "t", "payload": {"i": i}} for i in range(50)])
    thaw.join()
    assert _evalsha_calls(r) - before >= 2
    assert [j.id for j in jobs] == [str(i) for i in range(2, 52)]
    assert r.zcard("nbq:{bulk-once}:wait") == 51
    assert check_states(r, "bulk-once") == []
    conn.close()


def test_async_add_resent_during_a_freeze_stores_one_job(fresh_server: RedisProcess,
                                                         short_timeouts: None) -> None:
    r = fresh_server.client()
    conn = connect(fresh_server.url)

    async def main() -> Any:
        q = nbqueue.aio.Queue("aonce", conn)
        await q.add({"type": "warm"})
        before = _evalsha_calls(r)
        thaw = _frozen(fresh_server, FREEZE_S)
        job = await q.add({"type": "t"})
        await asyncio.to_thread(thaw.join)
        await q.close()
        return job, _evalsha_calls(r) - before

    job, calls = asyncio.run(main())
    assert calls >= 2
    assert r.zcard("nbq:{aonce}:wait") == 2
    assert job.id == "2"
    conn.close()


class _CuttingProxy:
    """A TCP proxy to Redis that, when armed, drops the next reply and cuts the connection:
    the add ran in Redis, its client never hears of it and reconnects (redis-py retries)."""

    def __init__(self, port: int) -> None:
        import socket

        self.target = port
        self.armed = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True),
                             daemon=True).start()

    def _pump(self, src: Any, dst: Any, replies: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if replies and self.armed.is_set():
                    self.armed.clear()
                    break  # the reply is lost with the connection
                dst.sendall(data)
        except OSError:
            pass
        import socket

        for sock in (src, dst):  # shutdown first: it wakes the other pump's recv too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self.sock.close()


def test_add_whose_reply_is_lost_with_its_connection_stores_one_job(
        fresh_server: RedisProcess) -> None:
    r = fresh_server.client()
    proxy = _CuttingProxy(fresh_server.port)
    conn = connect(f"redis://127.0.0.1:{proxy.port}/0")
    q = Queue("cut-once", conn)
    q.add({"type": "warm"})
    before = _evalsha_calls(r)
    proxy.armed.set()
    job = q.add({"type": "t"})  # ran, reply lost, reconnect, re-sent
    assert _evalsha_calls(r) - before >= 2
    assert job.id == "2" and r.zcard("nbq:{cut-once}:wait") == 2
    bulk = (proxy.armed.set(), q.add_bulk([{"type": "t"}] * 5))[1]
    assert [j.id for j in bulk] == ["3", "4", "5", "6", "7"]
    assert r.zcard("nbq:{cut-once}:wait") == 7
    assert check_states(r, "cut-once") == []
    conn.close()
    proxy.close()


def test_same_token_twice_returns_the_first_calls_jobs(conn: Any, r: redis.Redis) -> None:
    """The script level: one call replayed by hand gets the first reply, writes nothing."""
    q = Queue("tok", conn)
    qo = q._ops
    args, _ = qo.prepare({"type": "t"}, {})
    call = qo.call("add", "tok-1", 60_000, *args, *args)
    client = conn.sync()
    first = _run_raw(client, call)
    again = _run_raw(client, call)
    assert first == again
    assert r.zcard("nbq:{tok}:wait") == 2 and r.get("nbq:{tok}:ctr") == "2"
    assert 0 < r.pttl("nbq:{tok}:add:tok-1") <= 60_000


def _run_raw(client: Any, call: Any) -> Any:
    from nbqueue.protocol import run_sync, single

    return run_sync(client, single(call))


def test_add_timestamp_is_the_servers_clock(conn: Any, r: redis.Redis,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # the producer's clock is an hour fast; the job's timestamp must not care
    real = time.time
    monkeypatch.setattr(ops.time, "time", lambda: real() + 3600)
    q = Queue("clock", conn)
    secs, micros = r.time()
    server_ms = secs * 1000 + micros // 1000
    job = q.add({"type": "t"})
    bulk = q.add_bulk([{"type": "t"}, {"type": "t"}])
    for j in (job, *bulk):
        assert abs(j.timestamp - server_ms) < 60_000
        assert str(j.timestamp) == r.hget(f"nbq:{{clock}}:job:{j.id}", "ts")


def test_dead_letter_failed_at_is_the_servers_clock(conn: Any, r: redis.Redis,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from nbqueue import Worker

    real = time.time
    monkeypatch.setattr(ops.time, "time", lambda: real() - 7200)  # the worker's clock is slow
    q = Queue("clock-dl", conn)
    job = q.add({"type": "t"}, attempts=1)

    def fail(job: Any) -> None:
        raise ValueError("no")

    dlq = Queue("dead_letter", conn)
    with Worker("clock-dl", fail, conn):
        deadline = time.monotonic() + 30
        while not [d for d in dlq.get_jobs("waiting") if d.payload.get("job_id") == job.id]:
            assert time.monotonic() < deadline, "no dead-letter record"
            time.sleep(0.05)
    entry = next(d for d in dlq.get_jobs("waiting") if d.payload.get("job_id") == job.id)
    secs, micros = r.time()
    server_ms = secs * 1000 + micros // 1000
    assert abs(entry.payload["failed_at"] - server_ms) < 60_000
    assert entry.id.endswith(f":{entry.payload['failed_at']}")


def test_bulk_add_is_sent_in_chunks_and_every_job_arrives(
        conn: Any, r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "BULK_CHUNK_JOBS", 7)
    q = Queue("chunks", conn)
    q.add({"type": "warm"})
    before = _evalsha_calls(r)
    jobs = q.add_bulk([{"type": "t", "payload": {"i": i}} for i in range(50)]
                      + [({"type": "d"}, {"delay": 60_000})])
    assert _evalsha_calls(r) - before == 8  # ceil(51 / 7) script calls
    assert [j.id for j in jobs] == [str(i) for i in range(2, 53)]
    assert r.zcard("nbq:{chunks}:wait") == 51 and r.zcard("nbq:{chunks}:delayed") == 1
    # FIFO across chunks
    assert r.zrange("nbq:{chunks}:wait", 0, -1) == [str(i) for i in range(1, 52)]
    assert check_states(r, "chunks") == []


def test_bulk_chunks_are_also_cut_by_size(conn: Any, r: redis.Redis,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "BULK_CHUNK_BYTES", 10_000)
    q = Queue("chunk-bytes", conn)
    q.add({"type": "warm"})
    before = _evalsha_calls(r)
    q.add_bulk([{"type": "t", "payload": "x" * 4000} for _ in range(9)])
    assert _evalsha_calls(r) - before == 3  # 3 jobs of ~4 KB reach 10 KB
    assert r.zcard("nbq:{chunk-bytes}:wait") == 10


def test_bad_item_in_a_later_chunk_writes_nothing(conn: Any, r: redis.Redis,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "BULK_CHUNK_JOBS", 5)
    q = Queue("chunk-bad", conn)
    items: list[Any] = [{"type": "t"} for _ in range(20)] + [{"type": "t", "x": object()}]
    with pytest.raises(TypeError):
        q.add_bulk(items)
    assert r.keys("nbq:{chunk-bad}:*") == []


def test_default_chunking_of_a_large_bulk(conn: Any, r: redis.Redis) -> None:
    q = Queue("chunk-default", conn)
    q.add({"type": "warm"})
    n = ops.BULK_CHUNK_JOBS * 2 + 1
    before = _evalsha_calls(r)
    jobs = q.add_bulk([{"type": "t"}] * n)
    assert _evalsha_calls(r) - before == 3
    assert len(jobs) == n and len({j.id for j in jobs}) == n
    assert r.zcard("nbq:{chunk-default}:wait") == n + 1
