"""Per-job hooks (``Worker(hooks=[...])``) in every run mode, against a real Redis: the
one job body calls ``before(job)`` and ``after(job, outcome)`` around each attempt, in the
job's own context (process mode: in the child, the hook pickled with the processor)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis

from nbqueue import JobFailedError, Queue, Worker
from nbqueue.records import Outcome


class RecordingHook:
    """Writes what it sees to a Redis list (picklable: only a URL and a key)."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key

    def before(self, job: Any) -> None:
        redis.Redis.from_url(self.url).rpush(self.key, f"before {job.id} {os.getpid()}")

    def after(self, job: Any, outcome: Outcome) -> None:
        redis.Redis.from_url(self.url).rpush(
            self.key, f"after {job.id} {outcome.kind.name} {outcome.error_type}")


def _sync(job: Any) -> int:
    if job.payload.get("fail"):
        raise ValueError("no")
    return int(job.payload["v"])


async def _async(job: Any) -> int:
    return _sync(job)


@pytest.mark.parametrize("mode", ["thread", "asyncio", "process"])
def test_hooks_run_around_every_attempt_in_every_mode(conn: Any, r: redis.Redis,
                                                      redis_url: str, mode: str) -> None:
    q = Queue(f"hooks-{mode}", conn)
    ok = q.add({"type": "t", "payload": {"v": 3}})
    bad = q.add({"type": "t", "payload": {"fail": True}})
    hook = RecordingHook(redis_url, f"hooks:{mode}")
    proc = _async if mode == "asyncio" else _sync
    with Worker(q.name, proc, conn, mode=mode, hooks=[hook]):
        assert ok.result(timeout=30) == 3
        with pytest.raises(JobFailedError):
            bad.result(timeout=30)
    seen = r.lrange(f"hooks:{mode}", 0, -1)
    for job, end in ((ok, "COMPLETED "), (bad, "EXHAUSTED ValueError")):
        mine = [s for s in seen if s.split()[1] == job.id]
        assert [s.split()[0] for s in mine] == ["before", "after"]
        assert mine[1].rstrip() == f"after {job.id} {end}".rstrip()
    pids = {int(s.split()[2]) for s in seen if s.startswith("before")}
    assert (pids == {os.getpid()}) == (mode != "process")  # process mode: in the child


def test_a_bad_hook_is_refused_when_the_worker_is_made(conn: Any) -> None:
    with pytest.raises(TypeError, match="before"):
        Worker("hooks-bad", _sync, conn, hooks=[object()])
