"""Issue 13: ``global_concurrency=N`` holds across worker processes (two of them, one in
thread mode and one in asyncio mode, each with a local concurrency above N), whether the
jobs arrive in bulk (fetch), one by one to parked workers (the direct hand-off lane), or
under a rate limit too. Each body counts itself in and out of a Redis counter; the highest
value it ever reached is the number of bodies that ran at once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from rhelpers import HERE, REPO, kill_all, wait_until

from nbqueue import Queue, connect

pytestmark = pytest.mark.reliability


def _spawn(url: str, queue: str, mode: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(HERE / "gc_worker_main.py"), url, queue, mode],
                            env=env, cwd=str(REPO), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("limit, rate", [(3, None), (1, None), (2, {"max": 40,
                                                                      "duration": 500})])
def test_global_concurrency_across_two_worker_processes(fresh_server, limit, rate):
    url = fresh_server.url
    r = redis.Redis.from_url(url, decode_responses=True)
    name = f"gc{limit}"
    q = Queue(name, connect(url), global_concurrency=limit, rate_limiter=rate)
    q.set_global_concurrency(limit)
    procs = [_spawn(url, name, "thread"), _spawn(url, name, "asyncio")]
    try:
        jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(40)])
        assert wait_until(lambda: q.get_metrics().completed == 40, 120)
        # one by one, with the workers idle in between: the direct hand-off lane
        for i in range(15):
            jobs.append(q.add({"type": "t", "payload": i}))
            if i % 5 == 4:
                assert wait_until(lambda: q.get_metrics().total == 0, 60)
        assert wait_until(lambda: q.get_metrics().completed == 55, 120)
        assert all(p.poll() is None for p in procs)
    finally:
        kill_all(procs)
    assert sorted(int(j.id) for j in jobs) == list(range(1, 56))
    assert int(r.get(f"gc:running:{{{name}}}") or 0) == 0
    # never more than the limit at once, and the limit was reached (it is not a formality)
    assert int(r.get(f"gc:max:{{{name}}}")) == limit
