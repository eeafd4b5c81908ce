"""Issue 21 item 4: drain, obliterate, retry_failed and clean never keep Redis busy.

Each is sent in script calls of at most ``ops.SWEEP_CHUNK_JOBS`` jobs (like ``add_bulk``), so
no call lasts long whatever the queue's size. Checked with Redis's own counters on a private
server: the operation made at least N / SWEEP_CHUNK_JOBS script calls (INFO commandstats)
and none took more than a quarter of their total time (SLOWLOG) (before: one call took all of it).
The figures in milliseconds (no call over ~50 ms) come from ``python -m bench.reliability
--sweep N``, not from a timed assertion. A ``BUSY`` reply (another client's script runs past
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
from nbqueue import NbqueueError, Queue, connect, ops, protocol
from nbqueue.errors import RedisBusyError

pytestmark = pytest.mark.reliability

N = 60_000  # old code: one drain/obliterate call of 60k jobs took ~0.2 s

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
    with RedisProcess(args=["--slowlog-log-slower-than", "1000",
                            "--slowlog-max-len", "100000"]) as p:
        yield p


def _fill(q: Queue, r: redis.Redis, n: int = N, finished: str = "") -> None:
    q.add_bulk([{"i": i} for i in range(n)])
    if finished:
        ms = int(time.time() * 1000) - 60_000
        while r.eval(_FINISH_ALL, 1, f"nbq:{{{q.name}}}:", finished, finished, ms):
            pass
    r.slowlog_reset()
    r.config_resetstat()


def _check_split(r: redis.Redis, jobs: int) -> None:
    """The op's script calls since ``_fill``: enough of them (INFO commandstats), and none
    (SLOWLOG, every call over 1 ms) longer than a quarter of their total time."""
    stats = r.info("commandstats")
    sha, ev = stats.get("cmdstat_evalsha", {}), stats.get("cmdstat_eval", {})
    calls = int(sha.get("calls", 0)) - int(sha.get("failed_calls", 0)) + int(ev.get("calls", 0))
    total = int(sha.get("usec", 0)) + int(ev.get("usec", 0))
    longest = max([e["duration"] for e in r.slowlog_get(100_000)
                   if bytes(e["command"]).upper().startswith(b"EVAL")], default=0)
    assert calls >= jobs // ops.SWEEP_CHUNK_JOBS, (calls, jobs)
    assert longest <= total / 4, (longest, total)


def test_drain_of_a_large_queue_keeps_every_call_short(server: RedisProcess) -> None:
    r = server.client()
    q = Queue("big", connect(server.url))
    _fill(q, r)
    q.add({"late": 1}, delay=60_000)
    r.slowlog_reset()
    r.config_resetstat()
    assert q.drain() == N
    _check_split(r, N)
    assert q.get_metrics().waiting == 0 and q.get_metrics().delayed == 1
    assert q.drain(delayed=True) == 1
    assert check_states(r, "big") == []


def test_obliterate_of_a_large_queue_keeps_every_call_short(server: RedisProcess) -> None:
    r = server.client()
    q = Queue("big", connect(server.url))
    _fill(q, r, N // 2)
    _fill(q, r, N // 2, finished="completed")
    assert q.obliterate() == N
    _check_split(r, N)
    assert [k for k in r.keys("nbq:{big}:*") if ":add:" not in k] == []


def test_retry_failed_of_many_jobs_keeps_every_call_short(server: RedisProcess) -> None:
    r = server.client()
    q = Queue("big", connect(server.url))
    _fill(q, r, finished="failed")
    assert q.retry_failed() == N
    _check_split(r, N)
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
    _check_split(r, N)
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
