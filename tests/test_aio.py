"""The asyncio API: the same names, awaitable, sharing the sync implementation."""

from __future__ import annotations

import asyncio

import pytest

from nbqueue import JobFailedError, JobState, aio


def test_aio_queue_worker_manager(conn):
    async def main():
        mgr = aio.QueueManager(connection=conn)
        q = mgr.get_queue("aq", worker_concurrency=4)

        async def proc(job):
            await job.update_progress(50)
            if job.name == "bad":
                raise ValueError("bad job")
            return job.data["payload"] + 1

        mgr.register_processor("aq", proc)
        worker = await mgr.start_worker("aq")
        assert worker.mode == "asyncio"
        job = await mgr.add_job("aq", {"type": "t", "payload": 41})
        assert await job.result(timeout=10) == 42
        bad = await q.add({"type": "bad"})
        with pytest.raises(JobFailedError):
            await bad.result(timeout=10)
        jobs = await mgr.add_jobs("aq", [{"type": "t", "payload": i} for i in range(10)])
        assert [await j.result(timeout=10) for j in jobs] == list(range(1, 11))
        status = await mgr.get_job_status("aq", job.id)
        assert status.state is JobState.COMPLETED and status.progress == 50
        m = await mgr.get_queue_metrics("aq")
        assert m.completed == 11 and m.failed == 1
        await mgr.pause_queue("aq")
        assert (await q.get_metrics()).paused
        await mgr.resume_queue("aq")
        assert await mgr.retry_failed_jobs("aq") == 1
        await mgr.aclose()
        assert not worker.is_running
        await q.close()

    asyncio.run(main())


def test_aio_events_iterator(conn):
    async def main():
        q = aio.Queue("evq", conn)
        last, _ = await q.read_events("$")
        await q.add({"type": "t"})
        async for event in q.events(last, block=500):
            assert event.event == "added" and event.job_id == "1"
            break
        await q.close()

    asyncio.run(main())
