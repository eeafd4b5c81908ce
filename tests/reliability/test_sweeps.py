"""Issue 21 item 4: drain, obliterate, retry_failed and clean never keep Redis busy.

Each is sent in script calls of at most ``ops.SWEEP_CHUNK_JOBS`` jobs (like ``add_bulk``), so
no call lasts more than ~50 ms whatever the queue's size: checked with Redis's own SLOWLOG
(threshold 50 ms) on a private server. A ``BUSY`` reply (another client's script runs past
``busy-reply-threshold``) is sent again with back-off, then raised as ``RedisBusyError``
(an ``NbqueueError``), never as a raw ``redis.ResponseError``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redisproc import RedisProcess
from rhelpers import check_states

import nbqueue.aio
from nbqueue import NbqueueError, Queue, connect, protocol
from nbqueue.errors import RedisBusyError

pytestmark = pytest.mark.reliability

N = 60_000  # old code: one drain/obliterate call of 60k jobs took ~0.2 s
SLOW_US = 50_000

# Test set-up only (not a transition under test): move every waiting job of a queue to a
# finished set, in calls of 5000 ids, with the ids' state fields and finish time.
_FINISH_ALL = """
local ids = redis.call('ZRANGE', KEYS[1] .. 'wait', 0, 4999)
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1] .. ARGV[1], ARGV[3], id)
  redis.call('HSET', KEYS[1] .. 'job:' .. id, 'state', ARGV[2], 'fon', ARGV[3], 'atm', 1)
end
if #ids > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1] .. 'wait', 0, #ids - 1) end
return #ids
"""


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    with RedisProcess(args=["--slowlog-log-slower-than", str(SLOW_US),
                            "--slowlog-max-len", "1000"]) as p:
        yield p


def _fill(q: Queue, r: redis.Redis, n: int = N, finished: str = "") -> None:
    q.add_bulk([{"i": i} for i in range(n)])
    if finished:
        ms = int(time.time() * 1000) - 60_000
        while r.eval(_FINISH_ALL, 1, f"nbq:{{{q.name}}}:", finished, finished, ms):
            pass
    r.slowlog_reset()


def _slow_scripts(r: redis.Redis) -> list[tuple[float, str]]:
    return [(e["duration"] / 1000, " ".join(str(a) for a in e["command"][:4]))
            for e in r.slowlog_get(1000)]


def test_drain_of_a_large_queue_keeps_every_call_short(server: RedisProcess) -> None:
    r = server.client()
    q = Queue("big", connect(server.url))
    _fill(q, r)
    q.add({"late": 1}, delay=60_000)
    r.slowlog_reset()
    assert q.drain() == N
    assert _slow_scripts(r) == []
    assert q.get_metrics().waiting == 0 and q.get_metrics().delayed == 1
    assert q.drain(delayed=True) == 1
    assert check_states(r, "big") == []


def test_obliterate_of_a_large_queue_keeps_every_call_short(server: RedisProcess) -> None:
    r = server.client()
    q = Queue("big", connect(server.url))
    _fill(q, r, N // 2)
    _fill(q, r, N // 2, finished="completed")
    assert q.obliterate() == N
    assert _slow_scripts(r) == []
    assert [k for k in r.keys("nbq:{big}:*") if ":add:" not in k] == []


def test_retry_failed_of_many_jobs_keeps_every_call_short(server: RedisProcess) -> None:
    r = server.client()
    q = Queue("big", connect(server.url))
    _fill(q, r, finished="failed")
    assert q.retry_failed() == N
    assert _slow_scripts(r) == []
    m = q.get_metrics()
    assert (m.waiting, m.failed) == (N, 0)
    assert check_states(r, "big") == []
    assert r.hget("nbq:{big}:job:1", "atm") == "0"


@pytest.mark.parametrize("state", ["completed", "waiting"])
def test_clean_of_many_jobs_keeps_every_call_short(server: RedisProcess, state: str) -> None:
    r = server.client()
    q = Queue("big", connect(server.url))
    _fill(q, r, finished="" if state == "waiting" else state)
    assert q.clean(0, 0, state) == N
    assert _slow_scripts(r) == []
    assert check_states(r, "big") == [] and r.keys("nbq:{big}:job:*") == []


def test_clean_with_a_limit_and_a_grace_removes_exactly_those(server: RedisProcess) -> None:
    r = server.client()
    q = Queue("small", connect(server.url))
    q.add_bulk([{"i": i} for i in range(5000)])
    assert q.clean(0, 2500, "waiting") == 2500
    assert q.clean(3_600_000, 0, "waiting") == 0  # none is an hour old
    assert q.get_metrics().waiting == 2500
    ids = [int(i) for i in r.zrange("nbq:{small}:wait", 0, -1)]
    assert min(ids) == 2501  # the oldest went first


def _spin(url: str, seconds: float, started: threading.Event) -> None:
    """Another client's script that keeps Redis busy for ``seconds``."""
    client = redis.Redis.from_url(url)
    started.set()
    client.eval("""
      local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]
      while true do
        t = redis.call('TIME')
        if t[1] * 1e6 + t[2] - s > tonumber(ARGV[1]) then break end
      end
      return 1""", 0, int(seconds * 1e6))
    client.close()


@pytest.fixture
def busy_server() -> Iterator[RedisProcess]:
    with RedisProcess(args=["--busy-reply-threshold", "100"]) as p:
        yield p


def _while_busy(url: str, seconds: float) -> threading.Thread:
    started = threading.Event()
    t = threading.Thread(target=_spin, args=(url, seconds, started), daemon=True)
    t.start()
    started.wait(5)
    time.sleep(0.3)  # past busy-reply-threshold: every other client now gets BUSY
    return t


def test_busy_redis_is_waited_out_sync_and_asyncio(busy_server: RedisProcess) -> None:
    r = busy_server.client()
    q = Queue("q", connect(busy_server.url))
    q.add({"warm": 1})
    spinner = _while_busy(busy_server.url, 1.5)
    job = q.add({"during": "busy"})  # old code: raw redis.ResponseError 'BUSY ...'
    assert job.id == "2"
    spinner.join(10)

    async def async_add() -> str:
        aq = nbqueue.aio.Queue("q", nbqueue.aio.connect(busy_server.url))
        await aq.add({"warm": 2})
        spinner = _while_busy(busy_server.url, 1.5)
        job = await aq.add({"during": "busy"})
        await asyncio.to_thread(spinner.join, 10)
        return str(job.id)

    assert asyncio.run(async_add()) == "4"
    assert q.get_metrics().waiting == 4
    assert check_states(r, "q") == []


def test_busy_for_too_long_is_a_named_nbqueue_error(busy_server: RedisProcess,
                                                    monkeypatch: Any) -> None:
    monkeypatch.setattr(protocol, "BUSY_RETRY_S", 0.3)
    r = busy_server.client()
    q = Queue("q", connect(busy_server.url))
    q.add({"warm": 1})
    spinner = _while_busy(busy_server.url, 2.0)
    with pytest.raises(RedisBusyError) as info:
        q.add({"during": "busy"})
    spinner.join(10)
    assert isinstance(info.value, NbqueueError)
    assert "BUSY" in str(info.value) and "SCRIPT KILL" in str(info.value)
    assert q.get_metrics().waiting == 1  # nothing of the refused add was written
    assert check_states(r, "q") == []
