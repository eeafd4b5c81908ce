"""The ops layer without Redis: drive each generator by hand with canned replies.

``QueueOps`` methods yield the calls they need and take the replies back, so their parsing
and decisions can be checked here, fast, with no server and no mock of a client: what a
real reply looks like is written out in each test (the same shapes the Lua scripts
return; tests against a real Redis cover the scripts themselves).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from nbqueue import (
    JobActiveError,
    JobFailedError,
    JobNotFoundError,
    JobState,
    NbqueueError,
    QueueBusyError,
    ResultTimeoutError,
)
from nbqueue.ops import Outcome, OutcomeKind, QueueOps
from nbqueue.protocol import Batch, Call, Op, Step
from nbqueue.records import FETCH_STRIDE


def drive(op: Op[Any], replies: Iterable[Any]) -> tuple[list[Step], Any]:
    """Run ``op`` answering its steps with ``replies`` in turn: (the steps, its value)."""
    steps: list[Step] = []
    pending = iter(replies)
    try:
        step = next(op)
        while True:
            steps.append(step)
            step = op.send(next(pending))
    except StopIteration as stop:
        return steps, stop.value


def raises(op: Op[Any], replies: Iterable[Any]) -> list[Step]:
    """Like ``drive``, for an op expected to raise: returns the steps it took first."""
    steps: list[Step] = []
    pending = iter(replies)
    step = next(op)
    while True:
        steps.append(step)
        step = op.send(next(pending))


OPS = QueueOps("sq")
# The queue-name registry (an SADD riding with an add once a minute): registered already,
# so these tests see add's own call alone (the registry has tests of its own).
OPS.registered_at = float("inf")


def fetched_job(job_id: str, data: Any = None, *, lock: str = "L", atm: int = 0,
                opts: str = "{}", prio: int = 3) -> list[Any]:
    """One job as the fetch/finish scripts return it (FETCH_STRIDE fields)."""
    text = json.dumps({"type": "t", "n": job_id} if data is None else data)
    fields = [job_id, lock, "t", text, opts, str(atm), "1700000000000", str(prio), "", "0",
              25 if atm == 0 else -1]  # wait ms of a first attempt (-1: a later one)
    assert len(fields) == FETCH_STRIDE
    return fields


# -- add ------------------------------------------------------------------------------------
def test_add_takes_its_id_and_the_server_time_from_the_reply() -> None:
    steps, record = drive(OPS.add({"type": "email", "payload": {"to": "a"}}, {}),
                          [[41, 1_700_000_000_123, "1700000000123-4"]])
    assert len(steps) == 1 and isinstance(steps[0], Call) and steps[0].script == "add"
    assert record.id == "42" and record.timestamp == 1_700_000_000_123
    # the id of the call's first event: Job.result() reads the stream from there
    assert record.since == "1700000000123-4"
    assert record.name == "email" and record.state is JobState.WAITING


def test_add_bulk_numbers_jobs_from_one_counter_value() -> None:
    steps, records = drive(OPS.add_bulk([{"type": "a"}, {"type": "b"}, ({"type": "c"},
                                                                          {"delay": 5000})]),
                           [[10, 1, ""]])
    assert len(steps) == 1
    assert [r.id for r in records] == ["11", "12", "13"]
    assert [r.state for r in records] == [JobState.WAITING, JobState.WAITING,
                                          JobState.DELAYED]


def test_add_of_an_existing_job_id_returns_the_stored_job() -> None:
    stored = {"name": "t", "data": '{"type":"t","v":"old"}', "state": "completed",
              "opts": "{}", "atm": "1", "ts": "5"}
    steps, record = drive(OPS.add({"type": "t", "v": "new"}, {"job_id": "x"}),
                          [[7, 99, "", 1],  # job 1 of the call existed already
                           [stored, None]])  # HGETALL of it, HGET paused
    assert isinstance(steps[1], Batch)
    assert steps[1].calls[0].command == ("HGETALL", OPS.keys.job("x"))
    assert record.id == "x" and record.data["v"] == "old"
    assert record.state is JobState.COMPLETED
    assert record.since is None  # it may have ended before: a waiter must look at it first


def test_bad_job_data_is_refused_before_any_call() -> None:
    op = OPS.add({"type": "t", "f": object()}, {})
    with pytest.raises(TypeError):
        next(op)


# -- reading --------------------------------------------------------------------------------
def test_metrics_total_is_pending_work() -> None:
    steps, m = drive(OPS.metrics(), [[4, 2, 10, 1, 3, "1", 5]])
    assert isinstance(steps[0], Batch) and len(steps[0].calls) == 7
    assert (m.waiting, m.active, m.completed, m.failed, m.delayed) == (4, 2, 10, 1, 3)
    assert m.waiting_children == 5  # jobs held for their dependencies (depends_on)
    assert m.paused is True and m.total == 4 + 2 + 3 + 5


def test_wait_result_returns_the_stored_value() -> None:
    _, value = drive(OPS.wait_result("5", None),
                     [[],  # XREVRANGE: an empty event stream
                      ["completed", '{"ok": 1}', None, None, None]])
    assert value == {"ok": 1}


def test_wait_result_of_a_failed_job_raises_with_reason_and_type() -> None:
    with pytest.raises(JobFailedError, match="boom") as exc:
        raises(OPS.wait_result("5", None), [[], ["failed", None, "boom", "ValueError",
                                                 None]])
    assert exc.value.error_type == "ValueError" and exc.value.job_id == "5"


def test_wait_result_of_a_missing_job() -> None:
    with pytest.raises(JobNotFoundError):
        raises(OPS.wait_result("5", None), [[], [None] * 5])


def test_wait_result_times_out_without_waiting_past_the_deadline() -> None:
    with pytest.raises(ResultTimeoutError) as exc:
        raises(OPS.wait_result("5", 0), [[], ["active", None, None, None, None],
                                          [[1_700_000_000, 0], []]])  # TIME, no worker
    assert isinstance(exc.value, TimeoutError) and isinstance(exc.value, NbqueueError)
    assert "no live worker" in str(exc.value)  # the registry was read (nbqueue.liveness)


def test_wait_result_looks_again_after_the_job_s_event() -> None:
    event = [["1-0", {"event": "completed", "jobId": "5"}]]  # as redis-py parses XREAD
    steps, value = drive(OPS.wait_result("5", None), [
        [["0-1", []]],  # the stream's last entry id: 0-1
        ["active", None, None, None, None],
        [[["sq-stream", event]], [["0-1", {}]]],  # XREAD: the event (no value); XRANGE
        ["completed", "3", None, None, None]])
    assert value == 3
    xread = steps[2]
    assert isinstance(xread, Batch) and xread.calls[0].command is not None
    assert xread.calls[0].command[0] == "XREAD" and xread.calls[0].command[-1] == "0-1"


def test_wait_result_from_the_add_reads_the_value_from_the_completed_event() -> None:
    # since: the add's own event id; the completed entry (raw, as a direct call reads it)
    # carries the value: one round trip, no read of the job
    entry = ["7-0", ["event", "completed", "jobId", "5", "rv", '{"5": [1, 2]}']]
    steps, value = drive(OPS.wait_result("5", None, since="6-0"),
                         [[{"nbq:{sq}:events": [entry]}, [["6-0", []]]]])
    assert value == [1, 2] and len(steps) == 1
    assert steps[0].calls[0].command[-1] == "6-0"  # type: ignore[union-attr,index]


def test_wait_result_looks_at_the_job_when_the_stream_was_trimmed_past_it() -> None:
    # nothing about job 5 in the read, but the stream's first entry (9-0) is past 6-0:
    # entries may have been lost, so the job is read
    steps, value = drive(OPS.wait_result("5", None, since="6-0"),
                         [[[], [["9-0", []]]],
                          ["completed", '"late"', None, None, None]])
    assert value == "late"
    assert steps[1].command[0] == "HMGET"  # type: ignore[union-attr,index]


# -- control --------------------------------------------------------------------------------
def test_remove_of_an_active_job_is_refused() -> None:
    with pytest.raises(JobActiveError):
        raises(OPS.remove("3"), [-1])
    steps, removed = drive(OPS.remove("3"), [1, []])
    assert removed is True
    # then the files of its artifacts, if any (an fsspec store: artgc): none here
    assert isinstance(steps[1], Call) and steps[1].command == ("SRANDMEMBER",
                                                               "nbq:{sq}:artgc", 500)
    assert drive(OPS.remove("3"), [0])[1] is False


def test_obliterate_with_active_jobs_is_refused() -> None:
    with pytest.raises(QueueBusyError):
        raises(OPS.obliterate(), [[-1, 0]])
    # in script calls of at most SWEEP_CHUNK_JOBS jobs, until one says it is done
    steps, removed = drive(OPS.obliterate(force=True), [[1000, 0], [12, 1], [], 1])
    assert removed == 1012
    assert [s.script for s in steps[:2]] == ["obliterate", "obliterate"]
    assert isinstance(steps[2], Call) and steps[2].command is not None
    assert steps[2].command[0] == "SRANDMEMBER"  # artifact files of its jobs: none here
    assert isinstance(steps[3], Call) and steps[3].command is not None
    assert steps[3].command[0] == "SREM"  # out of the registry of queue names too
    OPS.registered_at = float("inf")


# -- the worker's side ----------------------------------------------------------------------
def test_fetch_parses_jobs_and_marks_a_corrupt_one() -> None:
    reply = [250, 0, *fetched_job("1", atm=2),
             *fetched_job("2", data=[1, 2]),  # data that is not an object
             *fetched_job("3")]
    _, fetched = drive(OPS.fetch(3, "w", 30_000), [reply])
    assert [r.id for r in fetched.jobs] == ["1", "3"]
    assert fetched.jobs[0].attempts_made == 2 and fetched.jobs[0].lock == "L"
    assert fetched.jobs[0].state is JobState.ACTIVE
    assert [(c.job_id, c.lock) for c in fetched.corrupt] == [("2", "L")]
    assert fetched.next_delay_ms == 250 and fetched.limit_ttl_ms == 0


def test_fetch_reads_job_data_exactly_as_json_loads_does() -> None:
    # parse_fetch reads data with the C scanner directly (per-job path); what it does not
    # read whole goes to json.loads: same values, same refusals
    texts = ['{"a": 1}', ' {"a": [1, 2.5]} ', '{"a": 1}\n', '{"s": "\\u00e9\\ud800"}',
             '{"a": 1} x', '{"a": 1}{}', '\ufeff{"a": 1}', "", "{", "[1]", '"x"']
    entries: list[object] = []
    for i, text in enumerate(texts):
        entry = fetched_job(str(i))
        entry[3] = text
        entries += entry
    _, fetched = drive(OPS.fetch(len(texts), "w", 30_000), [[-1, 0, *entries]])
    ok = {r.id: r.data for r in fetched.jobs}
    for i, text in enumerate(texts):
        try:
            expected = json.loads(text)
        except ValueError:
            expected = None
        if isinstance(expected, dict):
            assert ok[str(i)] == expected
        else:
            assert str(i) not in ok  # not an object, or not JSON: a corrupt job
    assert len(ok) + len(fetched.corrupt) == len(texts)
    assert sorted(ok) == ["0", "1", "2", "3"]


def test_finish_sends_one_letter_per_outcome_and_reads_verdicts_and_next_jobs() -> None:
    _, f = drive(OPS.fetch(2, "w", 30_000), [[-1, 0, *fetched_job("1"), *fetched_job("2")]])
    done = [Outcome(f.jobs[0], OutcomeKind.COMPLETED, "null"),
            Outcome(f.jobs[1], OutcomeKind.RETRY, "boom", "ValueError", retry_delay=100)]
    steps, (oks, fetched) = drive(OPS.finish(done, {"dur_sum": 0.5}, 1, "w", 30_000),
                                  [[1, 0, -1, 0, *fetched_job("9")]])
    call = steps[0]
    assert isinstance(call, Call) and call.script == "finish"
    args = list(call.args)
    assert args.count("c") == 1 and args.count("r") == 1  # the kinds, on the wire
    assert "dur_sum" in args
    assert oks == [True, False]  # job 2's lock was lost: its outcome was dropped
    assert f.jobs[0].wait_ms == 25 and fetched.jobs[0].wait_ms == 25  # first attempts
    _, again = drive(OPS.fetch(1, "w", 30_000), [[-1, 0, *fetched_job("3", atm=1)]])
    assert again.jobs[0].wait_ms == -1  # a later attempt: no wait observed
    assert [r.id for r in fetched.jobs] == ["9"]


def test_block_and_fetch_takes_a_handed_over_job() -> None:
    hkey = OPS.handoff_key("w")
    handed = json.dumps(fetched_job("77"))
    steps, (fetched, parked) = drive(OPS.block_and_fetch("wake", 5.0, 1, "w", 30_000),
                                     [[[-1, 0], [hkey, handed]]])
    assert isinstance(steps[0], Batch) and steps[0].calls[1].command is not None
    assert steps[0].calls[1].command[0] == "BLPOP"
    assert [r.id for r in fetched.jobs] == ["77"] and parked is False


def test_block_and_fetch_after_a_marker_may_still_be_parked() -> None:
    _, (fetched, parked) = drive(OPS.block_and_fetch("wake", 5.0, 1, "w", 30_000),
                                 [[[-1, 0], [OPS.keys.marker, "1"]]])
    assert fetched.jobs == [] and parked is True


def test_check_stalled_and_extend_locks_replies() -> None:
    assert drive(OPS.check_stalled(1, 30_000), [[["1", "2"], ["3"], 0]])[1] == (["1", "2"],
                                                                                ["3"])
    # a failed job had dependents: the sweep notified them, the op delivers at once
    steps, _ = drive(OPS.check_stalled(1, 30_000), [[[], ["3"], 1], []])
    assert steps[1] == Call.cmd("ZRANGE", OPS.keys.notify, 0, steps[1].command[-1])
    steps, lost = drive(OPS.extend_locks({"1": "a", "2": "b"}, 30_000), [["2"]])
    assert lost == ["2"]
    call = steps[0]
    assert isinstance(call, Call) and list(call.args)[-4:] == ["1", "a", "2", "b"]


def test_outcome_kinds_are_a_str_enum_of_the_script_letters() -> None:
    assert [k.value for k in OutcomeKind] == ["c", "f", "x", "r"]
    assert OutcomeKind.COMPLETED == "c" and str(OutcomeKind.RETRY) == "r"
    _, f = drive(OPS.fetch(1, "w", 1), [[-1, 0, *fetched_job("1")]])
    assert Outcome(f.jobs[0], OutcomeKind.EXHAUSTED, "x").terminal_failure
    assert not Outcome(f.jobs[0], OutcomeKind.RETRY, "x").terminal_failure


def test_a_step_can_be_answered_by_anything_shaped_like_a_reply() -> None:
    # the executors are not involved at all: no Redis, no client
    _, paused = drive(OPS.is_paused(), ["1"])
    assert paused is True


# -- how jobs ended (wait_result and JobBatch share QueueOps.outcomes) -----------------------
def test_outcomes_reads_every_job_in_one_round_trip() -> None:
    steps, ends = drive(OPS.outcomes(["1", "2", "3", "4"]), [[
        ["completed", '{"v": 1}', None, None, None],
        ["failed", None, "boom", "ValueError", json.dumps(["Traceback: here"])],
        [None, None, None, None, None],
        ["active", None, None, None, None]]])
    assert len(steps) == 1 and isinstance(steps[0], Batch) and len(steps[0].calls) == 4
    assert [e.state for e in ends] == ["completed", "failed", "missing", "active"]
    assert ends[0].value == {"v": 1} and ends[0].error is None and ends[0].ended
    assert isinstance(ends[1].error, JobFailedError) and ends[1].error.error_type == "ValueError"
    assert ends[1].error.remote_traceback == "Traceback: here"
    assert isinstance(ends[2].error, JobNotFoundError) and "gone" in str(ends[2].error)
    assert not ends[3].ended and ends[3].error is None


def test_cancel_many_counts_and_resolves_dependents_once() -> None:
    steps, n = drive(OPS.cancel_many(["1", "2", "3", "4"]), [
        [[1, "waiting"], [0, ""], [3, "active"], [-1, "completed"]],
        []])  # flows.resolve: ZRANGE notify -> nothing left to deliver
    assert n == 2  # 1 (cancelled) and 3 (cancelled, dependents notified); 2 and 4 skipped
    assert isinstance(steps[0], Batch) and [c.script for c in steps[0].calls] == ["cancel"] * 4
    assert isinstance(steps[1], Call) and steps[1].command is not None
    assert steps[1].command[0] == "ZRANGE"  # the resolver ran (code 3)
    steps, n = drive(OPS.cancel_many(["5"]), [[[1, "waiting"]]])
    assert n == 1 and len(steps) == 1  # no resolver without a code 3


def test_retry_jobs_one_round_trip() -> None:
    # retry_failed.lua: {moved, re-armed, parents to re-arm}: nothing more to do here
    steps, moved = drive(OPS.retry_jobs(["1", "2", "3"]), [[[1, 0, []], [0, 0, []],
                                                           [1, 0, []]]])
    assert moved == 2 and len(steps) == 1 and isinstance(steps[0], Batch)
    assert [c.args[-1] for c in steps[0].calls] == ["1", "2", "3"]


def test_siblings_share_the_prefix_and_are_made_once() -> None:
    ops = QueueOps("left", prefix="pfx")
    right = ops.sibling("right")
    assert right.keys.prefix == "pfx" and right.name == "right"
    assert ops.sibling("right") is right and ops.sibling("left") is ops


def test_together_sends_the_steps_of_several_ops_as_one_batch() -> None:
    from nbqueue.protocol import together

    a, b = QueueOps("qa"), QueueOps("qb")
    steps, (ends_a, ends_b, none) = drive(together([
        a.outcomes(["1", "2"]), b.outcomes(["7"]), iter_nothing()]), [
        [["completed", "1", None, None, None], ["active", None, None, None, None],
         ["completed", "7", None, None, None]]])
    assert len(steps) == 1 and isinstance(steps[0], Batch) and len(steps[0].calls) == 3
    assert [e.value for e in ends_a] == [1, None] and ends_b[0].value == 7 and none == "done"


def iter_nothing() -> Op[str]:
    """An op that needs no Redis at all."""
    if False:  # pragma: no cover - makes this a generator
        yield Call.cmd("PING")
    return "done"


def test_together_runs_an_offload_step_on_its_own() -> None:
    from nbqueue.protocol import Offload, together

    def reads_a_file() -> Op[str]:
        body = yield Offload(lambda: "bytes")
        n = yield Call.cmd("STRLEN", "k")
        return f"{body}:{n}"

    steps, (a, b) = drive(together([reads_a_file(), QueueOps("qa").outcomes(["1"])]),
                          ["bytes", [5, ["completed", "1", None, None, None]]])
    assert isinstance(steps[0], Offload)  # alone, before the round of Redis calls
    assert isinstance(steps[1], Batch) and len(steps[1].calls) == 2
    assert a == "bytes:5" and b[0].value == 1
