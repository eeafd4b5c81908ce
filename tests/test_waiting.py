"""Waiting from the notebook: Job.result() and JobBatch follow the event stream (issue 20).

Small results come with their ``completed`` event, a waiter starts reading where its add
was, and it reads every unfinished job only when the capped stream was trimmed past what it
had read (or jobs were removed in bulk) - each case against a real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from nbqueue import InvalidOptionError, JobBatch, JobNotFoundError, Queue, Worker, aio
from nbqueue.batch import AUTO_CHUNK_BYTES, auto_chunksize, map_items


def _flood(q: Queue, n: int = 400) -> None:
    """Write ``n`` queue events (pause/resume) so that a short stream is trimmed."""
    for _ in range(n // 2):
        q.pause()
        q.resume()


def _first_entry(r: redis.Redis, q: Queue) -> str:
    return r.xrange(f"nbq:{{{q.name}}}:events", count=1)[0][0]


def test_batch_waiter_after_a_trimmed_stream_gets_every_result(conn: Any,
                                                               r: redis.Redis) -> None:
    q = Queue("trim-b", conn, events_maxlen=10)
    batch = q.add_bulk([{"type": "t", "payload": i} for i in range(30)])
    since = batch[0]._record.since
    assert since is not None
    with Worker("trim-b", lambda job: job.payload * 2, conn, concurrency=4):
        JobBatch([q.add({"type": "t", "payload": 0})]).wait(timeout=30, progress=False)
        while q.get_metrics().completed < 31:
            pass
    _flood(q)
    assert _first_entry(r, q) > since  # the completed events of the batch are gone
    assert batch.results(timeout=10) == [i * 2 for i in range(30)]


def test_job_result_after_a_trimmed_stream(conn: Any, r: redis.Redis) -> None:
    q = Queue("trim-j", conn, events_maxlen=10)
    job = q.add({"type": "t", "payload": 21})
    with Worker("trim-j", lambda j: j.payload * 2, conn):
        while q.get_metrics().completed < 1:
            pass
    _flood(q)
    assert _first_entry(r, q) > str(job._record.since)
    assert job.result(timeout=10) == 42


def test_small_results_come_with_the_event_no_read_of_the_job(conn: Any,
                                                              r: redis.Redis) -> None:
    """The job hashes are deleted after the jobs completed: the waiter still has every
    small value (from the ``completed`` entries) - and a large one is read from its job."""
    q = Queue("carry", conn)

    def proc(job: Any) -> Any:
        return "x" * 2000 if job.payload == 3 else {"n": job.payload}

    batch = q.add_bulk([{"type": "t", "payload": i} for i in range(6)])
    single = q.add({"type": "t", "payload": 9})
    with Worker("carry", proc, conn, concurrency=2):
        while q.get_metrics().completed < 7:
            pass
    entries = r.xrange("nbq:{carry}:events")
    assert any(f.get("event") == "completed" and "rv" in f for _, f in entries)
    r.delete(*[f"nbq:{{carry}}:job:{j.id}" for j in batch if j.payload != 3],
             f"nbq:{{carry}}:job:{single.id}")
    values = batch.results(timeout=10)
    assert values == [{"n": 0}, {"n": 1}, {"n": 2}, "x" * 2000, {"n": 4}, {"n": 5}]
    assert single.result(timeout=10) == {"n": 9}


def test_add_result_starts_where_the_add_was(conn: Any, r: redis.Redis) -> None:
    """``q.add(...).result()`` reads the stream from its add's own event: no read of the
    stream's end (XREVRANGE, which no worker sends), and the value comes with the event."""
    q = Queue("one-trip", conn)
    with Worker("one-trip", lambda job: job.payload + 1, conn):
        q.add({"type": "t", "payload": 0}).result(timeout=30)  # the worker is up
        r.config_resetstat()
        values = [q.add({"type": "t", "payload": i}).result(timeout=30) for i in range(20)]
        stats = r.info("commandstats")
    assert values == list(range(1, 21))
    assert "cmdstat_xrevrange" not in stats
    # one stream read per result, give or take a wake-up on another event of the job
    assert stats["cmdstat_xread"]["calls"] <= 40


def test_a_drain_ends_the_wait_of_drained_jobs(conn: Any) -> None:
    """drain removes waiting jobs with one queue event: the waiter looks at its jobs."""
    q = Queue("drained", conn)
    batch = q.add_bulk([{"type": "t", "payload": i} for i in range(5)])
    assert q.drain() == 5
    values = batch.results(timeout=10, return_exceptions=True)
    assert all(isinstance(v, JobNotFoundError) for v in values)
    with pytest.raises(JobNotFoundError):
        batch[0].result(timeout=10)


def test_a_batch_not_added_here_looks_at_its_jobs_first(conn: Any) -> None:
    """A batch rebuilt from ids (another kernel's) cannot know where its events start: it
    reads every job once, then follows the stream."""
    q = Queue("other", conn)
    added = q.add_bulk([{"type": "t", "payload": i} for i in range(4)])
    with Worker("other", lambda job: job.payload + 1, conn, concurrency=2):
        added.wait(timeout=30, progress=False)
        rebuilt = JobBatch([q.get_job(j.id) for j in added])
        assert all(j._record.since is None for j in rebuilt)
        more = q.add({"type": "t", "payload": 10})
        rebuilt.append(q.get_job(more.id))
        assert rebuilt.results(timeout=30) == [1, 2, 3, 4, 11]


@pytest.mark.parametrize("mode", ["thread", "asyncio", "process"])
def test_results_equal_across_modes(conn: Any, mode: str) -> None:
    name = f"modes-{mode}"
    q = Queue(name, conn)
    items = [{"type": "t", "payload": i} for i in range(12)]
    with Worker(name, _mode_proc, conn, concurrency=2, mode=mode):
        values = q.map(items).results(timeout=120)
        one = q.add({"type": "t", "payload": 5}).result(timeout=60)
        chunked = q.map(items, chunksize="auto").results(timeout=120)
    expected = [_mode_value(i) for i in range(12)]
    assert values == expected and one == _mode_value(5)
    assert [v for chunk in chunked for v in chunk] == expected


def _mode_value(i: int) -> Any:
    return {"i": i, "big": "y" * 1000} if i % 4 == 0 else [i, i * i]


def _mode_proc(job: Any) -> Any:
    if isinstance(job.payload, dict):  # a chunk of chunksize="auto"
        return [_mode_value(d["payload"]) for d in job.payload["items"]]
    return _mode_value(job.payload)


def test_async_batch_and_job_follow_the_stream(conn: Any, redis_url: str) -> None:
    async def main() -> tuple[list[Any], Any]:
        q = aio.Queue("aio-wait", redis_url)
        batch = await q.add_bulk([{"type": "t", "payload": i} for i in range(5)])
        job = await q.add({"type": "t", "payload": 7})
        w = Worker("aio-wait", lambda j: j.payload * 3, conn, concurrency=2).start()
        try:
            return await batch.results(timeout=30), await job.result(timeout=30)
        finally:
            w.stop()

    values, one = asyncio.run(main())
    assert values == [0, 3, 6, 9, 12] and one == 21


# -- chunksize="auto" ---------------------------------------------------------------------
def test_auto_chunksize_rule() -> None:
    small = [{"type": "t", "payload": {"x": i}} for i in range(1000)]
    # about 4 jobs per worker slot
    assert auto_chunksize(small, 2) == 125 and auto_chunksize(small, 8) == 32
    assert auto_chunksize(small[:3], 8) == 1 and auto_chunksize([], 2) == 1
    # ... but no more than ~64 KiB of JSON per job
    big = [{"type": "t", "payload": "z" * 10_000} for _ in range(100)]
    assert auto_chunksize(big, 1) == AUTO_CHUNK_BYTES // len('{"type": "t", "payload": "'
                                                             + "z" * 10_000 + '"}')
    jobs = map_items(small, "auto", slots=2)
    assert len(jobs) == 8 and jobs[0]["payload"]["items"] == small[:125]
    assert [len(j["payload"]["items"]) for j in jobs] == [125] * 8
    with pytest.raises(InvalidOptionError, match="'auto'"):
        map_items(small, "big")


def test_map_auto_sizes_chunks_for_the_queue_s_workers(conn: Any) -> None:
    q = Queue("auto", conn)
    items = [{"type": "t", "payload": i} for i in range(100)]
    batch = q.map(items, chunksize="auto")  # no worker registered: 8 slots assumed
    assert len(batch) == 25 and batch[0].payload["items"] == items[:4]
    with Worker("auto", lambda job: [d["payload"] for d in job.payload["items"]], conn,
                concurrency=3):
        assert [x for c in batch.results(timeout=30) for x in c] == list(range(100))
        sized = q.map(items, chunksize="auto")  # 3 slots: ceil(100 / 12) = 9 per job
        assert len(sized) == 12 and len(sized[0].payload["items"]) == 9
        assert [x for c in sized.results(timeout=30) for x in c] == list(range(100))
