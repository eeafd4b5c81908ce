"""Issue 21 item 3: idempotency tokens cannot fill Redis; failures on a full Redis follow
the written rule (docs/reliability.md "Durability rules").

* Tokens: each add call leaves ``add:<token>`` (its reply, ~180 bytes) for 3 minutes so
  that a re-sent call is not applied twice. Before, a producer whose jobs were consumed as
  fast as it added them filled a ``noeviction`` Redis with tokens alone and every add was
  refused until they expired. Now the next add of the same process to the queue deletes the
  tokens whose replies it received: live tokens stay at about one per (process, queue).
* Failures on a full Redis: the failure is recorded (state, reason, error type, attempts);
  its traceback is not stored while used_memory >= maxmemory (before: every 30-frame
  traceback was, and memory went far past maxmemory), so a failure there costs its state
  fields only (about 1 KB a job); dead-letter records are refused like
  every add and the worker logs the job ids it could not record. Once memory is free again
  both are written as usual.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
from redisproc import RedisProcess
from rhelpers import check_states, wait_until

from nbqueue import Queue, RedisOutOfMemoryError, Worker, connect, ops

pytestmark = pytest.mark.reliability


def test_tokens_alone_never_refuse_adds(monkeypatch: pytest.MonkeyPatch) -> None:
    with RedisProcess(args=["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]) as p:
        r = p.client()
        q = Queue("tok", connect(p.url))
        added = 0
        try:
            for i in range(15_000):  # old code: refused after ~10k adds (tokens alone)
                q.add({"i": i})
                added += 1
                if i % 500 == 499:
                    q.drain()  # a consumer that keeps the queue empty
        except RedisOutOfMemoryError as exc:
            pytest.fail(f"add {added + 1} refused: {exc}; "
                        f"{len(list(r.scan_iter('nbq:{tok}:add:*')))} tokens live")
        tokens = list(r.scan_iter("nbq:{tok}:add:*", count=1000))
        print(f"[tokens] {added} adds, none refused; {len(tokens)} tokens live")
        assert len(tokens) <= 2, len(tokens)
        # a bulk add: its chunks acknowledge one another too
        monkeypatch.setattr(ops.jobs, "BULK_CHUNK_JOBS", 100)
        q.drain()
        q.add_bulk([{"i": i} for i in range(1000)])
        assert len(list(r.scan_iter("nbq:{tok}:add:*", count=1000))) <= 2


def _deep(n: int) -> None:
    """Fails 30 frames down (two functions in turn: Python collapses a frame repeated in a
    row); each frame's line is long, like a real library's: an ~8 KB traceback."""
    if n == 0:
        raise ValueError("bad row " + "x" * 200)
    _deeper(n - 1)  # a long source line, as tracebacks of pandas/numpy code have: ..........................................................................................................  # noqa: E501


def _deeper(n: int) -> None:
    _deep(n)  # a long source line, as tracebacks of pandas/numpy code have: ................................................................................................................  # noqa: E501


def _fill(q: Queue) -> int:
    n = 0
    while True:
        try:
            q.add({"type": "t", "payload": "x" * 2000}, attempts=1)
        except RedisOutOfMemoryError:
            return n
        n += 1
        assert n < 100_000


def _memory(r: redis.Redis) -> tuple[int, int]:
    info = r.info("memory")
    return int(info["used_memory"]), int(info["maxmemory"])


def test_failures_on_a_full_redis_follow_the_rule(caplog: pytest.LogCaptureFixture) -> None:
    with RedisProcess(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]) as p:
        r = p.client()
        conn = connect(p.url)
        q = Queue("full", conn)
        n = _fill(q)
        assert n > 200

        def work(job: Any) -> None:
            _deep(30)

        caplog.set_level(logging.ERROR, logger="nbqueue")
        with Worker("full", work, conn, concurrency=4):
            assert wait_until(lambda: q.get_metrics().failed == n, 120)
        used, maxmemory = _memory(r)
        print(f"[full-redis] {n} jobs failed on maxmemory {maxmemory}: used_memory {used} "
              f"({(used - maxmemory) / n:.0f} bytes a failed job over maxmemory)")
        # the rule's bound: a failure on a full Redis costs its state fields only (under
        # 2 KB a job here); old code stored every 30-frame traceback (~5 KB more a job)
        assert (used - maxmemory) / n < 2000, (used, maxmemory, n)
        ids = r.zrange("nbq:{full}:failed", 0, -1)
        fields = [r.hmget("nbq:{full}:job:" + i, "et", "fr", "st", "atm") for i in ids]
        assert all(et == "ValueError" and fr.startswith("bad row") and atm == "1"
                   for et, fr, _, atm in fields)
        without = sum(1 for f in fields if f[2] is None)
        assert without >= n * 0.9, (without, n)  # jobs failed while full: no traceback
        # dead-letter records are refused like every add on a full Redis, and logged
        assert r.zcard("nbq:{dead_letter}:wait") < n
        assert any("could not record jobs" in rec.getMessage() for rec in caplog.records)
        assert check_states(r, "full") == []
        # memory free again: tracebacks and dead-letter records are written as before
        r.config_set("maxmemory", "0")
        before = r.zcard("nbq:{dead_letter}:wait")
        job = q.add({"type": "t"}, attempts=1)
        with Worker("full", work, conn):
            assert wait_until(lambda: job.get_state() == "failed", 30)
            assert wait_until(lambda: r.zcard("nbq:{dead_letter}:wait") == before + 1, 10)
        assert "_deep" in (r.hget("nbq:{full}:job:" + job.id, "st") or "")


def test_a_worker_stopped_on_a_full_redis_leaves_the_idle_registry() -> None:
    """A parked worker stopped while Redis is full must leave the idle registry: its wake-up
    push is refused there, and before, the worker then forgot it was registered, so the next
    add handed its job to the stopped worker (active, locked, run only after lock expiry and
    the stalled sweep: 30 s)."""
    with RedisProcess(args=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]) as p:
        r = p.client()
        conn = connect(p.url)
        q = Queue("parked", conn)
        _fill(Queue("filler", conn))
        with Worker("parked", lambda job: None, conn):
            assert wait_until(lambda: r.zcard("nbq:{parked}:idle") == 1, 10)
        assert r.zrange("nbq:{parked}:idle", 0, -1) == []
        r.config_set("maxmemory", "0")
        job = q.add({"n": 1})
        assert job.get_state() == "waiting"  # not handed to the stopped worker
        with Worker("parked", lambda job: "ok", conn):
            assert job.result(timeout=20) == "ok"
