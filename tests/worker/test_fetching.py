"""The fetcher and the outbox driven by a fake executor: their ops run on canned replies
(the shapes the scripts return), no Redis."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from nbqueue.ops import QueueOps
from nbqueue.protocol import Batch, Call
from nbqueue.records import FETCH_STRIDE, Outcome, OutcomeKind
from nbqueue.worker.execution import Execution
from nbqueue.worker.fetching import Fetcher
from nbqueue.worker.outbox import Outbox

from .fakes import FakeExecutor, FakeRunner, record


def fetched(job_id: str, data: Any = None) -> list[Any]:
    """One job of a fetch reply (fetch.lua / finish.lua)."""
    item = [job_id, "lock-" + job_id, "t", json.dumps(data or {"type": "t"}), "", 0,
            1_700_000_000_000, 3, "", 0, 5]
    assert len(item) == FETCH_STRIDE
    return item


def parts(concurrency: int = 2) -> tuple[Fetcher, Execution, Outbox, FakeRunner]:
    ops = QueueOps("wq")
    outbox = Outbox(ops, dead_letter=False, prefix="nbq")
    runner = FakeRunner()
    jobs = Execution(runner, concurrency, outbox=outbox)
    jobs.open(asyncio.Event())
    return Fetcher(ops, "w1", 30_000, jobs, outbox), jobs, outbox, runner


def test_a_fetch_starts_what_it_got_and_notes_an_empty_queue() -> None:
    fetcher, _, _, runner = parts()
    fake = FakeExecutor([[-1, 0, *fetched("1")]])
    fetcher.run = fake  # type: ignore[method-assign]

    async def go() -> None:
        got = await fetcher.fetch(2)
        await fetcher.accept(got, 2)

    asyncio.run(go())
    (step,) = fake.steps
    assert isinstance(step, Call) and step.script == "fetch"
    assert step.args[-5:-2] == (2, "w1", 30_000)  # want, token, lock ms
    assert runner.started_ids == ["1"] and fetcher.idle  # 1 of 2 asked: the queue is empty
    assert fetcher.next_delay == -1


def test_a_corrupt_job_becomes_a_failure_the_next_flush_sends() -> None:
    fetcher, _, outbox, runner = parts()
    bad = fetched("2")
    bad[3] = "not json"
    fake = FakeExecutor([[-1, 0, *bad, *fetched("3")]])
    fetcher.run = fake  # type: ignore[method-assign]

    async def go() -> None:
        await fetcher.accept(await fetcher.fetch(2), 2)

    asyncio.run(go())
    assert runner.started_ids == ["3"]
    (out,) = outbox.done
    assert out.job.id == "2" and out.error_type == "corrupt" and out.job.lock == "lock-2"
    assert not fetcher.idle


def test_a_finish_sends_outcomes_and_counters_and_fetches_in_one_call() -> None:
    fetcher, _, outbox, _ = parts()
    rec = record("1")
    outbox.book(Outcome(rec, OutcomeKind.COMPLETED, "7"), 0.01)
    done, _, _, stats = outbox.take(stats_now=True)
    fake = FakeExecutor([[1, -1, 0, *fetched("2")]])
    fetcher.run = fake  # type: ignore[method-assign]
    oks, got = asyncio.run(fetcher.finish(done, stats, 1))
    (step,) = fake.steps
    assert isinstance(step, Call) and step.script == "finish"
    assert "1" in step.args and "7" in step.args  # the outcome rides in the same call
    assert oks == [True] and [j.id for j in got.jobs] == ["2"]


def test_a_failed_flush_is_restored_so_nothing_is_lost() -> None:
    _, _, outbox, _ = parts()
    rec = record("1")
    outbox.book(Outcome(rec, OutcomeKind.COMPLETED, "null"), 0.01)
    outbox.logs["1"] = ["line"]
    parcel = outbox.take(stats_now=True)
    assert not outbox.pending
    outbox.restore(parcel)
    assert [o.job.id for o in outbox.done] == ["1"] and outbox.logs == {"1": ["line"]}
    assert isinstance(outbox.stats, Counter) and outbox.stats


def test_extras_go_as_progress_calls_and_one_log_call() -> None:
    _, _, outbox, _ = parts()
    fake = FakeExecutor([1, 1, 2])
    outbox.run = fake  # type: ignore[method-assign]
    asyncio.run(outbox.send_extras({"1": 50, "2": {"percent": 10}},
                                   {"1": ["a", "b"], "2": ["c"]}))
    assert [s.script for s in fake.steps if isinstance(s, Call)] == ["progress", "progress",
                                                                     "logs"]
    assert not any(isinstance(s, Batch) for s in fake.steps)
