"""Issue 4: 100,000 small jobs through a queue with default retention; memory stays bounded."""

from __future__ import annotations

import time

import pytest
import redis
from rhelpers import check_states, wait_until

from nbqueue import Queue, Worker, connect
from nbqueue.options import DEFAULT_KEEP_COMPLETED

pytestmark = pytest.mark.reliability

N = 100_000
CHUNK = 2_000


def test_soak_100k_default_retention(fresh_server, capsys):
    url = fresh_server.url
    r = redis.Redis.from_url(url, decode_responses=True)
    conn = connect(url)
    q = Queue("soak", conn)  # default retention
    q.add({"type": "warmup"})  # scripts loaded, queue keys exist
    w0 = Worker("soak", lambda job: None, conn, concurrency=1).start()
    assert wait_until(lambda: q.get_metrics().completed == 1, 10)
    w0.stop()
    mem_before = int(r.info("memory")["used_memory"])
    t0 = time.monotonic()
    w = Worker("soak", lambda job: {"n": job.data["payload"]["i"]}, conn, concurrency=16).start()
    peak = 0
    try:
        for start in range(0, N, CHUNK):
            q.add_bulk([{"type": "s", "payload": {"i": i}} for i in range(start, start + CHUNK)])
            if start % 20_000 == 0:
                peak = max(peak, int(r.info("memory")["used_memory"]))
        add_s = time.monotonic() - t0

        def drained() -> bool:
            m = q.get_metrics()
            return m.waiting == 0 and m.active == 0

        assert wait_until(drained, 240, 0.5), q.get_metrics()
        elapsed = time.monotonic() - t0
        assert w.is_running
    finally:
        w.stop()
    mem_after = int(r.info("memory")["used_memory"])
    peak = max(peak, mem_after)
    m = q.get_metrics()
    stats = q.get_stats()
    job_keys = sum(1 for _ in r.scan_iter(match="nbq:\\{soak\\}:job:*", count=5000))
    all_keys = sorted(r.keys("nbq:\\{soak\\}:*"))
    other = [k for k in all_keys if ":job:" not in k]
    with capsys.disabled():
        print(f"\n[soak] jobs={N} added_in={add_s:.1f}s drained_in={elapsed:.1f}s "
              f"({N / elapsed:.0f} jobs/s) used_memory before={mem_before / 1e6:.2f}MB "
              f"peak_sampled={peak / 1e6:.2f}MB after={mem_after / 1e6:.2f}MB "
              f"job_keys={job_keys} completed_retained={m.completed} "
              f"completed_total={int(stats.get('completed', 0))} other_keys={other}")
    assert m.failed == 0
    # retention is trimmed in small steps: at most a few percent over the limit
    assert DEFAULT_KEEP_COMPLETED <= m.completed <= DEFAULT_KEEP_COMPLETED * 1.05 + 10
    assert int(stats["completed"]) == N + 1
    assert job_keys == m.completed  # no key of a removed job is left behind
    assert check_states(r, "soak") == []
    # bounded: the events stream is capped, finished jobs trimmed; a few MB at most
    assert mem_after - mem_before < 8_000_000, (mem_before, mem_after)
    conn.close()
