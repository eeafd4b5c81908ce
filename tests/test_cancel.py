"""Cancel: waiting and delayed jobs at once, active ones on their worker in every mode."""

from __future__ import annotations

import asyncio

import pytest

from nbqueue import JobFailedError, JobNotFoundError, JobState, Queue, QueueManager

from .helpers import state_sets


def test_cancel_waiting_and_delayed_jobs_at_once(conn, r) -> None:
    q = Queue("cx", conn)
    waiting = q.add({"type": "t"})
    delayed = q.add({"type": "t"}, delay=60_000)
    events_from = q.read_events("0")[0]
    assert waiting.cancel() is True
    assert q.cancel(delayed.id) is True
    for job in (waiting, delayed):
        st = q.get_job_status(job.id)
        assert st.state is JobState.FAILED and st.error_type == "cancelled"
        with pytest.raises(JobFailedError) as err:
            job.result(timeout=5)
        assert err.value.error_type == "cancelled"
    sets = state_sets(r, "cx")
    assert sets["failed"] == {waiting.id, delayed.id}
    assert not sets["wait"] and not sets["delayed"] and not sets["active"]
    _, events = q.read_events(events_from)
    assert {(e.event, e.job_id) for e in events} >= {("cancelled", waiting.id),
                                                     ("cancelled", delayed.id)}
    # not dead-lettered, and a cancelled job can be retried like any failed job
    assert Queue("dead_letter", conn).get_metrics().total == 0
    assert q.retry_failed() == 2
    assert q.get_job_status(waiting.id).state is JobState.WAITING


def test_cancel_finished_is_a_noop_and_unknown_is_an_error(conn, r) -> None:
    q = Queue("cx2", conn)
    job = q.add({"type": "t"})
    assert q.cancel(job.id) is True
    assert q.cancel(job.id) is False  # failed already: documented no-op
    assert q.get_job_status(job.id).error_type == "cancelled"
    with pytest.raises(JobNotFoundError):
        q.cancel("nope")
    mgr = QueueManager(conn)
    mgr.get_queue("cx2")
    other = mgr.add_job("cx2", {"type": "t"})
    assert mgr.cancel_job("cx2", other.id) is True
    assert mgr.get_job_status("cx2", other.id).error_type == "cancelled"


def test_cancel_aio(conn) -> None:
    from nbqueue.aio import Queue as AQueue
    from nbqueue.aio import QueueManager as AManager

    async def main() -> None:
        q = AQueue("cx3", conn)
        job = await q.add({"type": "t"})
        assert await job.cancel() is True
        assert (await q.get_job_status(job.id)).error_type == "cancelled"
        mgr = AManager(conn)
        mgr.get_queue("cx3")
        j2 = await q.add({"type": "t"})
        assert await mgr.cancel_job("cx3", j2.id) is True
        assert await q.cancel(j2.id) is False
        await q.close()

    asyncio.run(main())
