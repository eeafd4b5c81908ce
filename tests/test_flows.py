"""Job dependencies (depends_on, waiting-children, fan-in) and their crash recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import nbqueue
from nbqueue import (
    InvalidOptionError,
    JobFailedError,
    JobNotFoundError,
    JobState,
    Queue,
    Worker,
    aio,
    flows,
)
from nbqueue.protocol import run_sync

from .helpers import wait_until


@pytest.fixture
def fast_flows(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Re-checks and worker upkeep every fraction of a second (defaults: 30 s / 5 s)."""
    monkeypatch.setattr(flows, "RECHECK_MS", 300)
    monkeypatch.setattr(flows, "UPKEEP_S", 0.2)
    yield


def _keys(r: Any, queue: str) -> set[str]:
    """The queue's keys, but add calls' idempotency tokens (``add:<token>``): the next add
    of the process deletes those (issue 21 item 3)."""
    return {k for k in r.keys(f"nbq:{{{queue}}}:*") if ":add:" not in k}


def _dead_letters(conn: Any) -> list[dict[str, Any]]:
    return [j.data["payload"] for j in Queue("dead_letter", conn).get_jobs("waiting", 0, 100)]


def test_fan_in_across_queues_with_dependency_results(conn) -> None:
    parts, combine = Queue("parts", conn), Queue("combine", conn)
    batch = parts.map([{"type": "sq", "payload": i} for i in range(6)])
    seen: dict[str, Any] = {}

    def combine_proc(job):
        seen.update(job.dependency_results())
        return sum(v for v in job.dependency_results().values())

    total = combine.add({"type": "sum"}, depends_on=list(batch))
    assert total.state is JobState.WAITING_CHILDREN
    assert combine.get_job_status(total.id).state == "waiting-children"
    with Worker("parts", lambda job: job.payload ** 2, conn, concurrency=2), \
            Worker("combine", combine_proc, conn):
        assert total.result(timeout=30) == sum(i * i for i in range(6))
    assert seen == {f"parts:{j.id}": j.payload ** 2 for j in batch}
    # nothing of the protocol is left behind
    assert not [k for k in _keys(conn.sync(), "combine") | _keys(conn.sync(), "parts")
                if "deps:" in k or k.endswith(":notify") or k.endswith("waiting-children")]


def test_waiting_children_in_metrics_frames_and_listings(conn) -> None:
    q = Queue("wc", conn)
    child = q.add({"type": "c"})
    parent = q.add({"type": "p"}, depends_on=child.id)
    m = q.get_metrics()
    assert m.waiting_children == 1 and m.waiting == 1 and m.total == 2
    assert [j.id for j in q.get_jobs("waiting-children")] == [parent.id]
    assert [j.id for j in q.get_jobs(JobState.WAITING_CHILDREN)] == [parent.id]
    frame = q.jobs_frame()
    assert frame.loc[parent.id, "state"] == "waiting-children"
    mgr = nbqueue.QueueManager(connection=conn)
    mgr.get_queue("wc")
    assert mgr.metrics_frame().loc["wc", "waiting_children"] == 1
    assert parent.status().state is JobState.WAITING_CHILDREN
    # Prometheus: nbqueue_queue_jobs{queue="wc", state="waiting-children"} 1
    from nbqueue.metrics import QueueCollector

    families = {f.name: f for f in QueueCollector(conn, ["wc"]).collect()}
    series = {tuple(s.labels.values()): s.value for s in families["nbqueue_queue_jobs"].samples}
    assert series[("wc", "waiting-children")] == 1 and series[("wc", "waiting")] == 1


def test_dependency_failure_fails_the_chain_and_dead_letters(conn) -> None:
    q = Queue("ff", conn)
    ran: list[str] = []

    def proc(job):
        ran.append(job.name)
        if job.name == "bad":
            raise ValueError("column 'price' not found")
        return job.name

    bad = q.add({"type": "bad"})
    good = q.add({"type": "good"})
    parent = q.add({"type": "parent"}, depends_on=[bad, good])
    grand = q.add({"type": "grand"}, depends_on=[parent])
    with Worker("ff", proc, conn, concurrency=2):
        with pytest.raises(JobFailedError) as info:
            grand.result(timeout=30)
        with pytest.raises(JobFailedError, match="column 'price' not found"):
            parent.result(timeout=30)
    assert info.value.error_type == "dependency_failed"
    assert f"dependency ff:{parent.id} failed" in str(info.value)
    status = parent.status()
    assert status.error_type == "dependency_failed" and status.state is JobState.FAILED
    assert status.failed_reason.startswith(f"dependency ff:{bad.id} failed: column")
    assert "parent" not in ran and "grand" not in ran
    assert q.get_stats()["error:dependency_failed"] == 2
    dead = {(d["job_id"], d["error_type"]) for d in _dead_letters(conn)}
    assert {(parent.id, "dependency_failed"), (grand.id, "dependency_failed")} <= dead


def test_ignore_policy_runs_with_the_results_that_exist(conn) -> None:
    q = Queue("ig", conn)

    def proc(job):
        if job.name == "bad":
            raise ValueError("nope")
        if job.name == "parent":
            return job.dependency_results()
        return 7

    bad, good = q.add({"type": "bad"}), q.add({"type": "good"})
    parent = q.add({"type": "parent"}, depends_on=[bad, good],
                   on_dependency_failure="ignore")
    with Worker("ig", proc, conn, concurrency=2, dead_letter=False):
        assert parent.result(timeout=30) == {f"ig:{good.id}": 7}


def test_dependencies_that_ended_before_the_add(conn) -> None:
    q = Queue("early", conn)
    done = q.add({"type": "c", "payload": 3})
    with Worker("early", lambda job: job.payload, conn):
        done.result(timeout=30)
    # released at once by the add itself (the dependency had completed)
    parent = q.add({"type": "p"}, depends_on=[done])
    assert parent.state is JobState.WAITING
    assert parent.dependency_results() == {f"early:{done.id}": 3}
    bad = q.add({"type": "c"})
    run_sync(conn.sync(), _fail_now(q, bad.id))
    failed = q.add({"type": "p"}, depends_on=[bad])
    assert failed.state is JobState.FAILED and failed.data == {"type": "p"}
    assert failed.status().error_type == "dependency_failed"


def _fail_now(q: Queue, job_id: str) -> Any:
    """Fetch the job and fail it, as a worker would (no retries)."""
    from nbqueue.ops import Outcome, OutcomeKind

    fetched = yield from q._ops.fetch(10, "tok", 30_000)
    record = next(r for r in fetched.jobs if r.id == job_id)
    failed = Outcome(record, OutcomeKind.FAILED, "broken on purpose", "ValueError")
    yield from q._ops.finish([failed], {}, 0, "tok", 30_000)


def test_bad_dependencies_are_refused_and_nothing_is_stored(conn, r) -> None:
    q = Queue("bd", conn)
    child = q.add({"type": "c"})
    before = _keys(r, "bd")
    cases = [
        ([("bd", "999")], JobNotFoundError, "no such job bd:999"),
        (["nope"], JobNotFoundError, "no such job bd:nope"),
        ([("other", child.id)], JobNotFoundError, f"no such job other:{child.id}"),
        ([], InvalidOptionError, "empty"),
        ([3.5], InvalidOptionError, "not float"),
        ([("bd", child.id, "x")], InvalidOptionError, "not tuple"),
        ([("b d", "1")], InvalidOptionError, "whitespace"),
    ]
    for deps, exc, match in cases:
        with pytest.raises(exc, match=match):
            q.add({"type": "p"}, depends_on=deps)
    with pytest.raises(InvalidOptionError, match="cannot depend on itself"):
        q.add({"type": "p"}, depends_on=[child, "self-1"], job_id="self-1")
    with pytest.raises(InvalidOptionError, match="'fail' or 'ignore'"):
        q.add({"type": "p"}, depends_on=[child], on_dependency_failure="retry")
    with pytest.raises(InvalidOptionError, match="with depends_on only"):
        q.add({"type": "p"}, on_dependency_failure="ignore")
    with pytest.raises(InvalidOptionError, match="unknown job option"):
        q.add_bulk([{"type": "p"}], depends_on=[child])
    with pytest.raises(InvalidOptionError, match="does not take depends_on"):
        q.map([{"type": "p"}], depends_on=[child])
    # a removed job is no job: refused as well
    gone = q.add({"type": "c"})
    assert q.remove(gone.id)
    after_remove = _keys(r, "bd")
    with pytest.raises(JobNotFoundError, match=f"no such job bd:{gone.id}"):
        q.add({"type": "p"}, depends_on=[gone])
    assert _keys(r, "bd") == after_remove and before <= after_remove
    assert q.get_metrics().waiting_children == 0


def test_job_id_is_idempotent_with_dependencies(conn) -> None:
    q = Queue("idem", conn)
    child = q.add({"type": "c"})
    a = q.add({"type": "p"}, depends_on=[child], job_id="fan-in")
    b = q.add({"type": "p"}, depends_on=[child], job_id="fan-in")
    assert a.id == b.id == "fan-in" and q.get_metrics().waiting_children == 1
    raw = conn.sync().hget(f"nbq:{{idem}}:job:{child.id}", "par")
    assert raw == '["idem fan-in"]'


def test_removing_a_dependency_or_a_waiting_job(conn, r) -> None:
    q = Queue("rm", conn)
    child = q.add({"type": "c"})
    parent = q.add({"type": "p"}, depends_on=[child])
    assert q.remove(child.id)  # the parent learns at once that its dependency is gone
    status = parent.status()
    assert status.state is JobState.FAILED and status.error_type == "dependency_failed"
    assert "was removed" in status.failed_reason
    other = q.add({"type": "c"})
    waiting = q.add({"type": "p"}, depends_on=[other])
    assert q.remove(waiting.id)
    assert not r.exists(f"nbq:{{rm}}:deps:{waiting.id}")
    assert q.get_metrics().waiting_children == 0
    # the dependency still names the removed parent: its end notifies nobody that exists
    with Worker("rm", lambda job: 1, conn):
        assert other.result(timeout=30) == 1
        wait_until(lambda: not r.exists("nbq:{rm}:notify"), 10, message="notify delivered")
    # obliterate removes waiting jobs and their dependency records too
    again = q.add({"type": "c"})
    q.add({"type": "p"}, depends_on=[again])
    q.obliterate(force=True)
    # (add idempotency tokens, nbq:{rm}:add:*, expire by themselves: see add.lua)
    assert {k for k in _keys(r, "rm") if ":add:" not in k} == set()


def test_cancel_a_waiting_job_or_a_dependency(conn, r) -> None:
    q = Queue("cxf", conn)
    child = q.add({"type": "c"})
    parent = q.add({"type": "p"}, depends_on=[child])
    grand = q.add({"type": "g"}, depends_on=[parent])
    assert parent.cancel()  # waiting for children: cancelled at once, its own parent told
    assert parent.status().error_type == "cancelled"
    assert not r.exists(f"nbq:{{cxf}}:deps:{parent.id}")
    g = grand.status()
    assert g.state is JobState.FAILED and g.error_type == "dependency_failed"
    assert f"dependency cxf:{parent.id} failed: cancelled" in g.failed_reason
    other = q.add({"type": "p"}, depends_on=[child])
    assert q.map([{"type": "x"}]).cancel() == 1
    assert child.cancel()  # a cancelled dependency fails the job that waits for it
    assert other.status().error_type == "dependency_failed"
    assert q.get_metrics().waiting_children == 0


def test_an_id_reused_after_removal_is_not_the_dependency(conn, fast_flows) -> None:
    """The dependency is the job that existed at add time: a new job with the same id
    (after the first was removed without a notification, e.g. by drain) does not count."""
    q = Queue("reuse", conn)
    first = q.add({"type": "c"}, job_id="data-load")
    parent = q.add({"type": "p"}, depends_on=[first])
    q.drain()  # removes the dependency without notifying (drain does not look at 'par')
    q.add({"type": "c"}, job_id="data-load")  # a new job, same id
    with Worker("reuse", lambda job: 1, conn), pytest.raises(JobFailedError, match="is gone"):
        parent.result(timeout=30)


# -- crash recovery (the protocol's steps run one at a time) -----------------------------------
def _add_parent_step1_only(q: Queue, deps: list[Any], **opts: Any) -> str:
    """What a process that died right after add_dependent.lua leaves behind."""
    seqs = [conn_hget(q, d) for d in deps]
    args, _ = q._ops.prepare({"type": "fanin"}, opts)
    flat: list[Any] = []
    for d, s in zip(deps, seqs):
        flat += [f"{d.queue_name} {d.id}", s]
    reply = run_sync(q.connection.sync(), _single(q._ops.call(
        "add_dependent", *args[:6], "fail", flows.RECHECK_MS, *flat)))
    return str(reply[0])


def conn_hget(q: Queue, job: Any) -> str:
    return str(job.queue.connection.sync().hget(job.queue._ops.keys.job(job.id), "seq"))


def _single(call: Any) -> Any:
    return (yield call)


def _finish_without_resolving(q: Queue, value: Any) -> list[str]:
    """A worker that fetches and completes every job, then dies before the resolver."""
    import json

    from nbqueue.ops import Outcome, OutcomeKind

    def op():
        fetched = yield from q._ops.fetch(100, "dying", 30_000)
        outcomes = [Outcome(rec, OutcomeKind.COMPLETED, json.dumps(value(rec)))
                    for rec in fetched.jobs]
        oks, after = yield from q._ops.finish(outcomes, {}, 0, "dying", 30_000)
        assert all(oks) and after.notify
        return [rec.id for rec in fetched.jobs]

    return run_sync(q.connection.sync(), op())


def crash_between_add_and_register(conn: Any, child_q: Queue, parent_q: Queue) -> None:
    children = [child_q.add({"type": "c", "payload": i}) for i in range(3)]
    pid = _add_parent_step1_only(parent_q, children)
    # the children complete: they know no parent, so no notification is queued
    with Worker(child_q.name, lambda job: job.payload * 10, conn):
        for c in children:
            c.result(timeout=30)
    assert parent_q.get_job_status(pid).state is JobState.WAITING_CHILDREN
    # a worker of the parent's queue re-checks the registration and recovers
    got: dict[str, Any] = {}

    def fanin(job):
        got.update(job.dependency_results())
        return "combined"

    with Worker(parent_q.name, fanin, conn):
        assert parent_q.get_job(pid).result(timeout=30) == "combined"
    assert got == {f"{child_q.name}:{c.id}": c.payload * 10 for c in children}


def crash_between_finish_and_resolve(conn: Any, child_q: Queue, parent_q: Queue) -> None:
    children = [child_q.add({"type": "c", "payload": i}) for i in range(3)]
    parent = parent_q.add({"type": "fanin"}, depends_on=children)
    done = _finish_without_resolving(child_q, lambda rec: rec.data["payload"] + 1)
    assert sorted(done) == sorted(c.id for c in children)
    client = conn.sync()
    assert client.zcard(child_q._ops.keys.notify) == 3
    assert parent.get_state() is JobState.WAITING_CHILDREN
    # a delivery that crashed before removing its notifications: delivered twice below
    entries = client.zrange(child_q._ops.keys.notify, 0, 0)
    import json

    _, pid, cq, cid, kind, value, gen = json.loads(entries[0])
    for _ in range(2):
        run_sync(client, _single(parent_q._ops.call("dep_resolve", pid, f"{cq} {cid}", kind,
                                                     value, gen)))
    assert client.hget(parent_q._ops.keys.job(parent.id), "dpend") == "2"
    runs: list[str] = []

    def fanin(job):
        runs.append(job.id)
        return sorted(job.dependency_results().values())

    # the child queue's next worker delivers what is left (its upkeep), once each
    with Worker(child_q.name, lambda job: None, conn), Worker(parent_q.name, fanin, conn):
        assert parent.result(timeout=30) == [1, 2, 3]
    assert runs == [parent.id]
    assert client.zcard(child_q._ops.keys.notify) == 0


def test_crash_between_add_and_register_is_recovered(conn, fast_flows) -> None:
    crash_between_add_and_register(conn, Queue("cr_child", conn), Queue("cr_parent", conn))


def test_crash_between_finish_and_resolve_is_recovered(conn, fast_flows) -> None:
    crash_between_finish_and_resolve(conn, Queue("cf_child", conn), Queue("cf_parent", conn))


def test_aio_dependencies(conn) -> None:
    async def main() -> None:
        q = aio.Queue("aflow", conn)
        child = await q.add({"type": "c", "payload": 5})
        parent = await q.add({"type": "p"}, depends_on=[child])
        assert parent.state is JobState.WAITING_CHILDREN

        async def proc(job):
            if job.name == "p":
                return await job.dependency_results()
            return job.payload

        async with aio.Worker("aflow", proc, conn):
            assert await parent.result(timeout=30) == {f"aflow:{child.id}": 5}
        await q.close()

    asyncio.run(main())


def test_a_notification_queued_by_an_older_nbqueue_is_delivered(conn) -> None:
    """Notifications gained a 7th element (the parent's generation, see includes/flows.lua);
    one left in Redis by a version before that (6 elements) counts as generation 0, the
    generation of a parent that version added (no 'arm'): an upgrade strands no fan-in."""
    import json

    child_q, parent_q = Queue("old_child", conn), Queue("old_parent", conn)
    children = [child_q.add({"type": "c", "payload": i}) for i in range(2)]
    parent = parent_q.add({"type": "fanin"}, depends_on=children)
    client = conn.sync()
    assert client.hget(parent_q._ops.keys.job(parent.id), "arm") == \
        client.hget(parent_q._ops.keys.job(parent.id), "seq")  # its first generation
    # as an older nbqueue wrote them: no generation on the parent, none on its children
    client.hdel(parent_q._ops.keys.job(parent.id), "arm")
    for c in children:
        client.hdel(child_q._ops.keys.job(c.id), "parg")
    _finish_without_resolving(child_q, lambda rec: rec.data["payload"] + 1)
    key = child_q._ops.keys.notify
    entries = client.zrange(key, 0, -1, withscores=True)
    assert [json.loads(e)[6] for e, _ in entries] == ["0", "0"]
    client.delete(key)
    client.zadd(key, {json.dumps(json.loads(e)[:6]): s for e, s in entries})
    run_sync(client, flows.resolve(child_q._ops))
    assert client.zcard(key) == 0
    assert parent.get_state() is JobState.WAITING  # both delivered: released
