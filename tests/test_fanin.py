"""Fan-in is never partial (issue 19 item 6; DESIGN "Fan-in is never partial").

Retrying a job that failed with ``dependency_failed``, or retrying a dependency of one,
re-arms it: it waits for EVERY dependency again and ``dependency_results()`` holds each
dependency's current result. The issue saw a retried fan-in complete from 12 of 20 chunks.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from nbqueue import JobFailedError, JobState, Queue, Worker, aio, flows
from nbqueue.ops import Outcome, OutcomeKind
from nbqueue.protocol import run_sync

N = 20


class Chunks:
    """A processor for chunks and their fan-in: chunk ``i`` returns ``i * scale`` unless
    it is broken (it raises); the fan-in returns what it was given."""

    def __init__(self, broken: set[int], scale: int = 10) -> None:
        self.broken = set(broken)
        self.scale = scale
        self.fanin_runs = 0
        self.lock = threading.Lock()

    def __call__(self, job: Any) -> Any:
        if job.name in ("sum", "grand"):
            with self.lock:
                self.fanin_runs += 1
            res = job.dependency_results()
            return {"n": len(res), "total": sum(v["total"] if isinstance(v, dict) else v
                                                for v in res.values())}
        i = job.payload
        if i in self.broken:
            raise ValueError(f"chunk {i} is broken")
        time.sleep(0.01)
        return i * self.scale

    def expected(self, n: int = N) -> dict[str, int]:
        return {"n": n, "total": sum(i * self.scale for i in range(n))}


def _chunks(q: Queue, n: int = N) -> Any:
    return q.map([{"type": "chunk", "payload": i} for i in range(n)])


def test_retrying_the_queue_never_runs_a_partial_fan_in(conn) -> None:
    """The issue's trial: a chunk fails, the fan-in fails with dependency_failed; the
    chunk is fixed and the queue's failed jobs retried together: the fan-in must wait for
    the retried chunk and see all 20 results (it used to run at once from the few chunks
    that had finished before the failure)."""
    q = Queue("fi_all", conn)
    proc = Chunks(broken={3})
    chunks = _chunks(q)
    total = q.add({"type": "sum"}, depends_on=list(chunks))
    with Worker(q.name, proc, conn, concurrency=4):
        with pytest.raises(JobFailedError) as info:
            total.result(timeout=30)
        assert info.value.error_type == "dependency_failed"
        chunks.wait(timeout=30, progress=False)
        proc.broken.clear()
        proc.scale = 100  # the fixed chunks return something new: the fan-in sees it
        assert q.retry_failed() == 2
        assert total.result(timeout=30) == {"n": N, "total": sum(100 * i for i in (3,))
                                            + sum(10 * i for i in range(N) if i != 3)}
    assert proc.fanin_runs == 1


def test_retrying_a_dependency_re_arms_its_failed_dependent(conn) -> None:
    q = Queue("fi_dep", conn)
    proc = Chunks(broken={7})
    chunks = _chunks(q)
    total = q.add({"type": "sum"}, depends_on=list(chunks))
    with Worker(q.name, proc, conn, concurrency=4):
        with pytest.raises(JobFailedError):
            total.result(timeout=30)
        chunks.wait(timeout=30, progress=False)
        proc.broken.clear()
        assert chunks[7].retry()
        assert total.result(timeout=30) == proc.expected()
    status = total.status()
    assert status.state is JobState.COMPLETED and status.failed_reason in ("", None)
    assert proc.fanin_runs == 1


def test_retrying_the_fan_in_alone_waits_for_every_dependency(conn) -> None:
    """Retrying the dependent while its dependency is still failed: it fails again on that
    dependency (it never runs with 19 of 20); once the dependency is retried it completes."""
    q = Queue("fi_self", conn)
    proc = Chunks(broken={0})
    chunks = _chunks(q)
    total = q.add({"type": "sum"}, depends_on=list(chunks))
    with Worker(q.name, proc, conn, concurrency=4):
        with pytest.raises(JobFailedError):
            total.result(timeout=30)
        chunks.wait(timeout=30, progress=False)
        assert total.retry()
        with pytest.raises(JobFailedError) as info:
            total.result(timeout=30)
        assert info.value.error_type == "dependency_failed"
        assert f"dependency fi_self:{chunks[0].id} failed" in str(info.value)
        assert proc.fanin_runs == 0
        proc.broken.clear()
        assert chunks[0].retry()
        assert total.result(timeout=30) == proc.expected()
    assert proc.fanin_runs == 1


def test_a_re_armed_dependent_is_held_in_one_step(conn) -> None:
    """The re-arm is one script: right after the retry the dependent is waiting-children,
    counting every dependency as pending again, and nothing of its failure is left."""
    q = Queue("fi_step", conn)
    a, b = q.add({"type": "chunk", "payload": 1}), q.add({"type": "chunk", "payload": 2})
    total = q.add({"type": "sum"}, depends_on=[a, b])
    proc = Chunks(broken={2})
    with Worker(q.name, proc, conn), pytest.raises(JobFailedError):
        total.result(timeout=30)
    r = conn.sync()
    key = q._ops.keys.job(total.id)
    assert r.hget(key, "et") == "dependency_failed"
    # the script alone (Job.retry then registers the dependencies: b is still failed)
    moved, armed, parents = run_sync(r, _single(q._ops.call("retry_failed", 0, total.id)))
    assert (moved, armed, parents) == (1, 1, [])
    assert r.hget(key, "state") == "waiting-children"
    assert r.hget(key, "dpend") == "2"
    assert r.hmget(key, "et", "fr", "fon", "dres") == ["", "", "", None]
    assert set(r.hgetall(q._ops.keys.deps(total.id)).values()) == {
        "p" + r.hget(q._ops.keys.job(a.id), "seq"), "p" + r.hget(q._ops.keys.job(b.id), "seq")}
    assert r.zscore(q._ops.keys.failed, total.id) is None
    assert r.zscore(q._ops.keys.waiting_children, total.id) is not None


def test_batch_retry_failed_re_arms_dependents_across_queues_and_levels(conn) -> None:
    parts, combine = Queue("fi_parts", conn), Queue("fi_combine", conn)
    proc = Chunks(broken={2, 11})
    chunks = _chunks(parts)
    total = combine.add({"type": "sum"}, depends_on=list(chunks))
    grand = combine.add({"type": "grand"}, depends_on=[total])
    with Worker(parts.name, proc, conn, concurrency=4), Worker(combine.name, proc, conn):
        with pytest.raises(JobFailedError):
            grand.result(timeout=30)
        chunks.wait(timeout=30, progress=False)
        assert total.get_state() is JobState.FAILED
        proc.broken.clear()
        assert chunks.retry_failed() == 2
        assert grand.result(timeout=30) == {"n": 1, "total": proc.expected()["total"]}
        assert total.result(timeout=5) == proc.expected()
    assert proc.fanin_runs == 2


def _run_without_resolving(q: Queue, broken: str) -> Any:
    """A worker that takes every waiting job of ``q`` and ends it -- job ``broken`` fails,
    the others complete with 10 -- then dies before it delivers the notifications."""
    fetched = yield from q._ops.fetch(10, "dying", 30_000)
    yield from q._ops.finish([Outcome(rec, OutcomeKind.FAILED, "chunk is broken", "ValueError")
                              if rec.id == broken else
                              Outcome(rec, OutcomeKind.COMPLETED, json.dumps(10))
                              for rec in fetched.jobs], {}, 0, "dying", 30_000)


def test_a_failure_not_yet_delivered_is_forgotten_by_the_retry(conn) -> None:
    """A dependency fails and its worker dies before delivering the notification; the
    dependency is retried before anyone delivers it: the stale failure must not fail the
    dependent (the retry drops it, in the same script)."""
    q = Queue("fi_stale", conn)
    a, b = q.add({"type": "chunk", "payload": 1}), q.add({"type": "chunk", "payload": 2})
    total = q.add({"type": "sum"}, depends_on=[a, b])

    r = conn.sync()
    run_sync(r, _run_without_resolving(q, b.id))
    assert r.zcard(q._ops.keys.notify) == 2 and b.get_state() is JobState.FAILED
    assert b.retry()
    assert r.zcard(q._ops.keys.notify) == 1  # a's completion stays; b's failure is gone
    with Worker(q.name, Chunks(broken=set()), conn):
        assert total.result(timeout=30) == {"n": 2, "total": 30}


def test_a_cancelled_dependent_is_re_armed_by_its_retry(conn) -> None:
    q = Queue("fi_cx", conn)
    a = q.add({"type": "chunk", "payload": 4})
    total = q.add({"type": "sum"}, depends_on=[a])
    assert total.cancel()
    assert total.get_state() is JobState.FAILED
    assert total.retry()
    assert total.get_state() is JobState.WAITING_CHILDREN
    with Worker(q.name, Chunks(broken=set()), conn):
        assert total.result(timeout=30) == {"n": 1, "total": 40}


def test_aio_batch_retry_failed_re_arms(conn) -> None:
    async def main() -> None:
        q = aio.Queue("fi_aio", conn)
        chunks = await q.map([{"type": "chunk", "payload": i} for i in range(5)])
        total = await q.add({"type": "sum"}, depends_on=list(chunks))
        proc = Chunks(broken={1})
        with Worker(q.name, proc, conn, concurrency=2):
            with pytest.raises(JobFailedError):
                await total.result(timeout=30)
            await chunks.wait(timeout=30, progress=False)
            proc.broken.clear()
            assert await chunks.retry_failed() == 1
            assert await total.result(timeout=30) == proc.expected(5)

    asyncio.run(main())


def _single(call: Any) -> Any:
    return (yield call)


def test_a_fan_in_of_1200_dependencies_is_armed_and_re_armed_whole(conn, r) -> None:
    """More dependencies than one HSET of the deps hash takes (500): both writers of it
    (add_dependent.lua and the retry re-arm, includes/flows.lua write_deps) write them all."""
    q = Queue("fi_wide", conn)
    chunks = q.add_bulk([{"type": "chunk", "payload": i} for i in range(1200)],
                        remove_on_complete=False)  # (the default keeps 1,000)
    total = q.add({"type": "sum"}, depends_on=list(chunks))
    deps = f"nbq:{{fi_wide}}:deps:{total.id}"
    assert r.hlen(deps) == 1200 and r.hget(f"nbq:{{fi_wide}}:job:{total.id}", "dpend") == "1200"
    proc_fast = Chunks(broken={1100}, scale=1)
    with Worker(q.name, lambda job: proc_fast(job) if job.name == "sum" or
                job.payload == 1100 else job.payload, conn, concurrency=4):
        with pytest.raises(JobFailedError):
            total.result(timeout=60)
        chunks.wait(timeout=60, progress=False)
        assert total.retry()  # re-armed: every dependency pending again, then re-checked
        with pytest.raises(JobFailedError):  # chunk 1100 is still failed: fails again
            total.result(timeout=60)
        proc_fast.broken.clear()
        assert chunks[1100].retry()
        # all 1200 results: a re-arm that wrote 500 pending entries would never complete
        assert total.result(timeout=60) == {"n": 1200, "total": sum(range(1200))}


class _Stepper:
    """Runs an op one Redis step at a time, so that a test can interleave two processes'
    protocol steps exactly (a real race, made deterministic)."""

    def __init__(self, r: Any, op: Any) -> None:
        self.r, self.op, self.value = r, op, None
        self.step: Any = next(op)
        self.done = False

    def run_until(self, stop: Any = lambda step: False) -> None:
        while not self.done and not stop(self.step):
            reply = run_sync(self.r, _single(self.step))
            try:
                self.step = self.op.send(reply)
            except StopIteration as end:
                self.done, self.value = True, end.value


def _is_cmd(name: str, key: str) -> Any:
    return lambda step: (getattr(step, "command", None) is not None
                         and step.command[0] == name and step.command[1] == key)


def test_a_notification_queued_again_during_a_resolver_run_is_not_lost(conn) -> None:
    """The intermittent failure of the re-arm tests above, made exact. A resolver (a
    worker's) reads a completion notification that arrived after the fan-in failed and
    delivers it: the fan-in is failed, nothing changes. Before it removes what it read, a
    retry re-arms the fan-in and registers its dependencies again: the completed one queues
    the same notification anew. The resolver's removal must not take the new one with it
    (it did: the member was the same text, so the fan-in waited for the 30 s re-check)."""
    q = Queue("fi_race", conn)
    ops, keys = q._ops, q._ops.keys
    a, b = q.add({"type": "chunk", "payload": 1}), q.add({"type": "chunk", "payload": 2})
    total = q.add({"type": "sum"}, depends_on=[a, b])

    r = conn.sync()
    run_sync(r, _run_without_resolving(q, b.id))  # their notifications are queued
    assert r.zcard(keys.notify) == 2
    worker_side = _Stepper(r, flows.resolve(ops))
    worker_side.run_until(_is_cmd("ZREM", keys.notify))  # delivered, not yet removed
    assert total.get_state() is JobState.FAILED
    retrying = _Stepper(r, flows.retry(ops, 0, b.id))
    retrying.run_until(_is_cmd("ZRANGE", keys.notify))  # re-armed and registered again
    assert total.get_state() is JobState.WAITING_CHILDREN
    worker_side.run_until()  # the worker's resolver removes what it read
    retrying.run_until()
    assert retrying.value == 1
    deps = r.hgetall(keys.deps(total.id))
    delivered = deps[f"fi_race {a.id}"].startswith("c")
    assert delivered or r.zcard(keys.notify) == 1, (deps, r.zrange(keys.notify, 0, -1))
    with Worker(q.name, Chunks(broken=set()), conn):
        assert total.result(timeout=30) == {"n": 2, "total": 30}


def _is_script(name: str) -> Any:
    return lambda step: getattr(step, "script", None) == name


def test_a_failure_read_before_a_retry_and_delivered_after_is_stale(conn) -> None:
    """The other intermittent failure of the re-arm tests. The fan-in is retried while b is
    still failed: its registration queues b's failure anew. A worker's resolver reads it;
    the retrying process's own resolver delivers it first (the fan-in fails again, as it
    should). b is fixed and retried: the fan-in is re-armed. Then the worker's resolver
    delivers what it read: that failure is news of the earlier arming and must not fail
    the re-armed fan-in (it did: 'dependency ... failed: chunk is broken' after the fix)."""
    q = Queue("fi_stale2", conn)
    ops, keys = q._ops, q._ops.keys
    a, b = q.add({"type": "chunk", "payload": 1}), q.add({"type": "chunk", "payload": 2})
    total = q.add({"type": "sum"}, depends_on=[a, b])

    r = conn.sync()
    run_sync(r, _run_without_resolving(q, b.id))
    run_sync(r, flows.resolve(ops))
    assert total.get_state() is JobState.FAILED
    retrying = _Stepper(r, flows.retry(ops, 0, total.id))
    retrying.run_until(_is_cmd("ZRANGE", keys.notify))  # re-armed; b's failure queued anew
    worker_side = _Stepper(r, flows.resolve(ops))
    worker_side.run_until(_is_script("dep_resolve"))  # read, not delivered yet
    retrying.run_until()
    assert total.get_state() is JobState.FAILED  # b is still failed: so is the fan-in
    assert b.retry()  # fixed: the fan-in is re-armed and waits for b again
    assert total.get_state() is JobState.WAITING_CHILDREN
    worker_side.run_until()  # the stale failure arrives
    assert total.get_state() is JobState.WAITING_CHILDREN
    with Worker(q.name, Chunks(broken=set()), conn):
        assert total.result(timeout=30) == {"n": 2, "total": 30}


def test_a_registration_older_than_the_last_re_arm_changes_nothing(conn) -> None:
    """A registration of the fan-in's dependencies that arrives after a newer arming's
    (an upkeep read the fan-in as due, then the fan-in failed, was retried and registered
    again before that upkeep's registration landed) is stale: it must not give the
    dependencies the old generation, whose news the fan-in then refuses (it would wait
    for its 30 s re-check)."""
    q = Queue("fi_late", conn)
    ops, keys = q._ops, q._ops.keys
    a, b = q.add({"type": "chunk", "payload": 1}), q.add({"type": "chunk", "payload": 2})
    total = q.add({"type": "sum"}, depends_on=[a, b])
    r = conn.sync()
    first = int(r.hget(keys.job(total.id), "arm"))
    deps = [(flows.Dep(q.name, j.id), r.hget(keys.job(j.id), "seq")) for j in (a, b)]
    assert total.cancel() and total.retry()  # re-armed: a newer generation, registered
    armed = int(r.hget(keys.job(total.id), "arm"))
    assert armed > first
    run_sync(r, flows.register(ops, total.id, deps, first))  # the late, stale one
    assert {json.loads(r.hget(keys.job(j.id), "parg"))[f"fi_late {total.id}"]
            for j in (a, b)} == {str(armed)}
    run_sync(r, _run_without_resolving(q, broken=""))  # a and b complete
    run_sync(r, flows.resolve(ops))
    assert total.get_state() is JobState.WAITING  # released at once, not at the re-check
