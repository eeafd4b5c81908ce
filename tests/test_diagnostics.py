"""Failure diagnostics and job logs: tracebacks per failed attempt, job.log, captured
print/logging output in every mode, caps, and removal with the job."""

from __future__ import annotations

import asyncio

from nbqueue import Queue
from nbqueue.ops import QueueOps


def test_job_log_outside_a_worker_and_reading_it(conn) -> None:
    q = Queue("lg", conn)
    job = q.add({"type": "t"})
    job.log("first")
    job.log({"not": "a str"})
    assert job.get_logs() == ["first", "{'not': 'a str'}"]
    assert q.get_job_logs(job.id) == ["first", "{'not': 'a str'}"]
    assert q.get_job_logs("no-such-job") == []


def test_logs_are_capped_and_lines_cut(conn) -> None:
    q = Queue("lg", conn)
    job = q.add({"type": "t"})
    ops = QueueOps("lg")
    q._run(ops.append_logs({job.id: [f"line {i}" for i in range(30)]}, cap=10))
    assert q.get_job_logs(job.id) == [f"line {i}" for i in range(20, 30)]
    job.log("x" * 25_000)
    last = q.get_job_logs(job.id)[-1]
    assert last.startswith("[15000 chars cut] ") and len(last) < 10_100


def test_logs_go_with_their_job(conn, r) -> None:
    q = Queue("lg", conn)
    removed, drained, cleaned, kept = (q.add({"type": "t"}) for _ in range(4))
    for job in (removed, drained, cleaned, kept):
        job.log("hello")
    assert q.remove(removed.id)
    assert r.exists(f"nbq:{{lg}}:logs:{removed.id}") == 0
    q.cancel(cleaned.id)  # failed now: clean removes it
    assert q.clean(0, 0, "failed") == 1
    assert r.exists(f"nbq:{{lg}}:logs:{cleaned.id}") == 0
    assert q.drain() == 2
    assert r.exists(f"nbq:{{lg}}:logs:{drained.id}") == 0
    # lines for a job that does not exist are dropped, not stored
    q.add({"type": "t"}).log("x")
    ops = QueueOps("lg")
    assert q._run(ops.append_logs({"ghost": ["boo"]})) == 0
    assert r.exists("nbq:{lg}:logs:ghost") == 0
    q.obliterate()
    assert not [k for k in r.keys("*") if "logs:" in k]


def test_logs_aio(conn) -> None:
    from nbqueue.aio import Queue as AQueue

    async def main() -> None:
        q = AQueue("lg2", conn)
        job = await q.add({"type": "t"})
        await job.log("one")
        assert await job.get_logs() == ["one"]
        assert await q.get_job_logs(job.id) == ["one"]
        await q.close()

    asyncio.run(main())
