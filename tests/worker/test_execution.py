"""``Execution`` (slots, ready jobs, deadlines) with a fake runner: no Redis, no threads."""

from __future__ import annotations

import asyncio
import time

from nbqueue.ops import QueueOps
from nbqueue.records import Outcome, OutcomeKind
from nbqueue.worker.execution import Execution
from nbqueue.worker.outbox import Outbox

from .fakes import FakeRunner, record


def execution(runner: FakeRunner, concurrency: int = 2) -> Execution:
    jobs = Execution(runner, concurrency, outbox=Outbox(QueueOps("wq"), dead_letter=False,
                                                        prefix="nbq"))
    jobs.open(asyncio.Event())
    return jobs


def test_jobs_start_up_to_the_slots_and_the_runner_s_holds_then_wait_ready() -> None:
    runner = FakeRunner(holds=2)  # a process runner: one held job per child
    jobs = execution(runner)
    assert jobs.capacity == 4
    for i in range(6):
        jobs.take(record(str(i)))
    assert runner.started_ids == ["0", "1", "2", "3"] and [r.id for r in jobs.ready] == ["4", "5"]
    assert set(jobs.held_locks()) == {str(i) for i in range(6)}  # held and ready: renewed
    rec = jobs.running["1"]
    jobs.done(rec, Outcome(rec, OutcomeKind.COMPLETED, "null"), 0.1)
    assert runner.started_ids[-1] == "4" and jobs.processed == 1  # its slot went on at once
    assert [o.job.id for o in jobs.outbox.done] == ["1"]


def test_a_report_for_a_job_no_longer_held_is_void() -> None:
    runner = FakeRunner()
    jobs = execution(runner)
    rec = record("1", timeout=1)
    jobs.take(rec)
    assert runner.started is not None and runner.done is not None
    runner.started(rec)
    time.sleep(0.01)
    jobs.expire_deadlines()  # timed out: its attempt is over, its body aborted
    runner.done(rec, Outcome(rec, OutcomeKind.COMPLETED, "null"), 0.1)  # reported late
    assert [o.error_type for o in jobs.outbox.done] == ["timeout"] and jobs.running == {}


def test_cancel_of_a_ready_job_and_of_an_unstarted_held_one_books_it_at_once() -> None:
    runner = FakeRunner(holds=1, cancel_unstarted=True)
    jobs = execution(runner, concurrency=1)
    for i in range(3):
        jobs.take(record(str(i)))
    jobs.cancel("2")  # ready: never handed to the runner
    jobs.cancel("1")  # held by the runner, not started: the runner says so
    assert runner.cancelled == ["1"]
    assert [(o.job.id, o.error_type) for o in jobs.outbox.done] == [("2", "cancelled"),
                                                                   ("1", "cancelled")]
    assert list(jobs.running) == ["0"] and jobs.failed == 2


def test_a_running_job_s_cancel_is_the_runner_s_to_report() -> None:
    runner = FakeRunner(cancel_unstarted=False)
    jobs = execution(runner)
    jobs.take(record("1"))
    jobs.cancel("1")
    jobs.cancel("nope")  # not ours: nothing
    assert runner.cancelled == ["1"] and jobs.outbox.done == []


def test_a_deadline_aborts_the_body_and_fails_the_attempt_as_a_timeout() -> None:
    runner = FakeRunner()
    jobs = execution(runner)
    rec = record("1", timeout=10)
    jobs.take(rec)
    jobs.take(record("2"))
    assert jobs.next_deadline() is None  # the clock starts when the runner says it started
    assert runner.started is not None
    runner.started(rec)
    first = jobs.next_deadline()
    assert first is not None and first > time.monotonic() - 1
    time.sleep(0.02)
    jobs.expire_deadlines()
    assert runner.aborted == [("1", False)]
    (out,) = jobs.outbox.done
    assert out.error_type == "timeout" and out.kind is OutcomeKind.EXHAUSTED
    assert jobs.next_deadline() is None and list(jobs.running) == ["2"]


def test_a_stop_gets_back_unstarted_jobs_and_release_hands_everything_back() -> None:
    runner = FakeRunner(holds=1)
    jobs = execution(runner, concurrency=1)
    a, b, c = record("a"), record("b"), record("c")
    for r in (a, b, c):
        jobs.take(r)
    runner.held = [b]  # held by a child, not started
    jobs.unhold()
    assert list(jobs.running) == ["a"] and [r.id for r in jobs.ready] == ["b", "c"]
    outs = jobs.release_all()
    assert runner.aborted == [("a", True)]
    assert [(o.job.id, o.kind, o.attempts_made) for o in outs] == [
        ("a", OutcomeKind.RETRY, 0), ("b", OutcomeKind.RETRY, 0), ("c", OutcomeKind.RETRY, 0)]
    assert jobs.running == {} and not jobs.ready


def test_a_cancel_that_comes_before_the_fetch_s_reply_still_stops_the_job() -> None:
    """The cancel listener has its own connection: it may hear of a job locked for us
    before the fetch that locked it is read. The job must not start then."""
    runner = FakeRunner()
    jobs = execution(runner)
    jobs.cancel("7")  # not held yet
    jobs.take(record("7"))
    jobs.take(record("8"))
    assert runner.started_ids == ["8"]
    assert [(o.job.id, o.error_type) for o in jobs.outbox.done] == [("7", "cancelled")]
    jobs.take(record("7"))  # a later attempt of the same id is not cancelled again
    assert runner.started_ids == ["8", "7"]
