"""The one job body (``nbqueue.worker.body``), without Redis: capture, hooks, the
processor, classify; the same ``JobBody`` runs in every mode (the child included)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from nbqueue import JobCancelledError, UnrecoverableError
from nbqueue.records import Outcome, OutcomeKind
from nbqueue.worker import capture
from nbqueue.worker.body import JobBody, check_hooks, classify

from .fakes import Sink, handle, record


class Hook:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    def before(self, job: Any) -> None:
        self.calls.append(("before", job.id))

    def after(self, job: Any, outcome: Outcome) -> None:
        self.calls.append(("after", (job.id, outcome.kind, outcome.error_type)))


def test_a_sync_attempt_runs_hooks_around_the_processor_and_captures_output() -> None:
    calls: list[tuple[str, Any]] = []
    sink = Sink()

    def proc(job: Any) -> dict[str, int]:
        calls.append(("processor", job.id))
        print("hello from", job.id)
        return {"v": 2}

    capture.install()  # what every runner does as it opens (here over pytest's capture)
    body = JobBody(proc, sink.report_log, hooks=[Hook(calls), Hook(calls)])
    outcome, took = body.run(record("1"), handle(record("1")))
    assert outcome.kind is OutcomeKind.COMPLETED and outcome.value == '{"v":2}' and took >= 0
    assert calls == [("before", "1"), ("before", "1"), ("processor", "1"),
                     ("after", ("1", OutcomeKind.COMPLETED, "")),
                     ("after", ("1", OutcomeKind.COMPLETED, ""))]
    assert sink.lines == [("1", "hello from 1")]  # print -> the job's log


def test_a_failing_hook_is_logged_and_never_fails_the_job(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    class Broken:
        def before(self, job: Any) -> None:
            raise RuntimeError("hook down")

        def after(self, job: Any, outcome: Outcome) -> None:
            raise RuntimeError("hook down")

    body = JobBody(lambda job: 5, Sink().report_log, hooks=[Broken()])
    with caplog.at_level(logging.ERROR, "nbqueue.worker"):
        outcome, _ = body.run(record("2"), handle(record("2")))
    assert outcome.kind is OutcomeKind.COMPLETED and outcome.value == "5"
    assert sum("job hook" in r.getMessage() for r in caplog.records) == 2


def test_the_hook_sees_how_the_attempt_ended() -> None:
    calls: list[tuple[str, Any]] = []

    def proc(job: Any) -> None:
        raise ValueError("bad input")

    body = JobBody(proc, Sink().report_log, hooks=[Hook(calls)])
    outcome, _ = body.run(record("3", attempts=2), handle(record("3", attempts=2)))
    assert outcome.kind is OutcomeKind.RETRY and outcome.error_type == "ValueError"
    assert calls[-1] == ("after", ("3", OutcomeKind.RETRY, "ValueError"))
    assert "bad input" in outcome.stacktrace and "in proc" in outcome.stacktrace
    assert "nbqueue/worker/body.py" not in outcome.stacktrace  # the body's frame left out


def test_a_job_cancelled_before_it_starts_never_runs() -> None:
    ran: list[str] = []
    rec = record("4")
    job = handle(rec)
    assert job._cancel_requested is not None
    job._cancel_requested.set()  # what a held job's cancel does before the child starts it
    outcome, _ = JobBody(lambda j: ran.append(j.id), Sink().report_log).run(rec, job)
    assert ran == [] and outcome.kind is OutcomeKind.FAILED
    assert outcome.error_type == "cancelled"


def test_an_async_attempt_times_out_in_the_body() -> None:
    async def slow(job: Any) -> None:
        await asyncio.sleep(5)

    rec = record("5", timeout=50)
    outcome, took = asyncio.run(JobBody(slow, Sink().report_log).run_async(rec, handle(rec)))
    assert outcome.kind is OutcomeKind.EXHAUSTED and outcome.error_type == "timeout"
    assert took < 2


def test_an_async_cancel_is_the_job_s_only_when_its_cancel_was_requested() -> None:
    async def main() -> tuple[Outcome, bool]:
        started = asyncio.Event()

        async def proc(job: Any) -> None:
            started.set()
            await asyncio.sleep(5)

        body = JobBody(proc, Sink().report_log)
        rec = record("6")
        job = handle(rec)
        task = asyncio.ensure_future(body.run_async(rec, job))
        await started.wait()
        assert job._cancel_requested is not None
        job._cancel_requested.set()  # job.cancel(): the attempt ends cancelled
        task.cancel()
        outcome, _ = await task
        # a cancel without a request (the worker stopping) propagates
        rec2 = record("7")
        started.clear()
        task2 = asyncio.ensure_future(body.run_async(rec2, handle(rec2)))
        await started.wait()
        task2.cancel()
        try:
            await task2
        except asyncio.CancelledError:
            return outcome, True
        return outcome, False

    outcome, propagated = asyncio.run(main())
    assert outcome.error_type == "cancelled" and propagated


def test_classify_keeps_the_retry_rules() -> None:
    rec = record("8", attempts=3)
    assert classify(rec, None).kind is OutcomeKind.COMPLETED
    assert classify(rec, {"success": False, "error": "no"}).error_type == "returned_failure"
    assert classify(rec, None, UnrecoverableError("x")).kind is OutcomeKind.FAILED
    assert classify(rec, None, JobCancelledError("x")).error_type == "cancelled"
    assert classify(rec, {1, 2}).error_type == "result_not_json"
    assert classify(rec, None, KeyError("k")).kind is OutcomeKind.RETRY


def test_hooks_are_checked_when_the_worker_is_made() -> None:
    assert check_hooks(None) == ()
    with pytest.raises(TypeError, match="has no after"):
        check_hooks([type("OnlyBefore", (), {"before": lambda self, job: None})()])
    with pytest.raises(TypeError, match="list of objects"):
        check_hooks(Hook([]))  # one hook, not a list
