"""Cancel: waiting and delayed jobs at once, active ones on their worker in every mode."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from nbqueue import JobFailedError, JobNotFoundError, JobState, Queue, QueueManager, Worker

from .helpers import state_sets, wait_until


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


# -- active jobs, stopped on their worker ---------------------------------------------------
async def _sleeps_async(job):
    if job.name == "long":
        await asyncio.sleep(120)
    return job.name


def _cooperative(job):
    if job.name == "long":
        while True:  # cooperative code checks the flag (a thread cannot be stopped)
            job.raise_if_cancelled()
            time.sleep(0.01)
    return job.name


def _sleeps_in_python(job):
    if job.name == "long":
        for _ in range(12_000):
            time.sleep(0.01)  # bytecode runs between sleeps: the child's signal stops it
    return [job.name, os.getpid()]


@pytest.mark.parametrize("mode, proc", [("asyncio", _sleeps_async),
                                        ("thread", _cooperative),
                                        ("process", _sleeps_in_python)])
def test_cancel_an_active_job_in_every_mode(conn, r, mode, proc) -> None:
    q = Queue(f"cxa-{mode}", conn)
    with Worker(q.name, proc, conn, mode=mode, concurrency=2):
        long = q.add({"type": "long"}, attempts=3)
        wait_until(lambda: q.get_job_status(long.id).state is JobState.ACTIVE, 60)
        events_from = q.read_events("$")[0]
        assert long.cancel() is True
        with pytest.raises(JobFailedError) as err:
            long.result(timeout=60)
        assert err.value.error_type == "cancelled"
        st = q.get_job_status(long.id)
        assert st.state is JobState.FAILED and st.attempts_made == 1  # not retried
        # the worker goes on with other work (process mode: in the same child)
        short = q.add({"type": "short"})
        assert short.result(timeout=60) is not None
        _, events = q.read_events(events_from)
        assert ("cancelled", long.id) in {(e.event, e.job_id) for e in events}
    assert Queue("dead_letter", conn).get_metrics().total == 0
    assert q.cancel(long.id) is False  # finished: a no-op
    assert state_sets(r, q.name)["active"] == set()


def _ignores_cancel(job):
    time.sleep(0.5)
    return "done anyway"


def test_thread_job_that_ignores_its_cancel_completes(conn) -> None:
    q = Queue("cx-ignore", conn)
    with Worker(q.name, _ignores_cancel, conn):
        job = q.add({"type": "t"})
        wait_until(lambda: q.get_job_status(job.id).state is JobState.ACTIVE, 30)
        assert job.cancel() is True
        assert job.result(timeout=30) == "done anyway"  # documented: its outcome stands


def test_cancel_job_flag_outside_a_worker(conn) -> None:
    job = Queue("cx-flag", conn).add({"type": "t"})
    assert job.cancelled is False
    job.raise_if_cancelled()  # no-op outside a worker


def test_cancel_magic(conn) -> None:
    from IPython.core.getipython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    ip = get_ipython() or start_ipython()
    ip.run_line_magic("load_ext", "nbqueue")
    q = Queue("mcx", conn)
    job = q.add({"type": "t"})
    ip.run_line_magic("nbqueue", f"cancel mcx {job.id}")
    assert q.get_job_status(job.id).error_type == "cancelled"
    ip.run_line_magic("nbqueue", f"cancel mcx {job.id}")  # finished: a no-op, no error
    from IPython.core.error import UsageError

    with pytest.raises(UsageError):
        ip.run_line_magic("nbqueue", "cancel mcx no-such-job")
