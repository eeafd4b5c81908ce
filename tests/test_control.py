"""Issue 13: job and queue control at BullMQ's level, against a real Redis.

promote, change_priority, update_data, lifo, deduplication (throttle / until finished /
debounce), global concurrency in the fetch and hand-off scripts, the worker registry.
"""

from __future__ import annotations

import asyncio

import pytest

import nbqueue
from nbqueue import (
    InvalidOptionError,
    JobNotFoundError,
    JobState,
    JobStateError,
    PayloadTooLargeError,
    Queue,
    QueueManager,
    WorkerInfo,
)

from .helpers import wait_until


@pytest.fixture
def q(conn):
    return Queue("ctl", conn)


def _take(q, want=100, token="tok"):
    """Fetch (lock) up to ``want`` jobs as a worker would; returns their ids in run order."""
    return [j.id for j in q._run(q._ops.fetch(want, token, 30_000)).jobs]


def _finish(q, ids, token="tok"):
    """Complete fetched jobs (the worker's finish call)."""
    from nbqueue.ops import Outcome, OutcomeKind

    records = q._run(q._ops.get_jobs_by_id(ids))
    outcomes = [Outcome(rec, OutcomeKind.COMPLETED, "null") for rec in records]
    oks, _ = q._run(q._ops.finish(outcomes, {}, 0, token, 30_000))
    assert all(oks)


def _dump(r, queue="ctl"):
    """Every key of the queue with its content: what "nothing was written" compares."""
    out = {}
    for key in sorted(r.scan_iter(match=f"nbq:{{{queue}}}:*")):
        if key.endswith(":events"):
            continue
        kind = r.type(key)
        if kind == "hash":
            out[key] = r.hgetall(key)
        elif kind == "zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            out[key] = r.get(key)
        elif kind == "list":
            out[key] = r.lrange(key, 0, -1)
    return out


def _events(q, name):
    _, events = q.read_events("0")
    return [e for e in events if e.event == name]


# -- promote ----------------------------------------------------------------------------------
def test_promote_runs_a_delayed_job_now_at_the_back_of_its_level(q, r):
    a = q.add({"type": "a"})
    d = q.add({"type": "d"}, delay=3_600_000)
    b = q.add({"type": "b"})
    hi = q.add({"type": "hi"}, priority=1, delay=3_600_000)
    d.promote()
    assert d.state is JobState.WAITING
    assert q.get_job_status(d.id).state is JobState.WAITING
    assert q.get_job_status(d.id).delay == 0
    q.promote(hi.id)
    # strict priority first, then FIFO as if the promoted jobs were added now
    assert _take(q) == [hi.id, a.id, b.id, d.id]
    assert {e.job_id for e in _events(q, "promoted")} == {d.id, hi.id}


def test_promote_bad_input_writes_nothing(q, r):
    w = q.add({"type": "w"})
    act = q.add({"type": "act"})
    done = q.add({"type": "done"})
    q.promote(q.add({"type": "x"}, delay=1000).id)  # a delayed job promotes fine
    assert _take(q, 3) == [w.id, act.id, done.id]
    _finish(q, [done.id])
    w2 = q.add({"type": "w2"})
    before = _dump(r)
    for job_id, state in ((w2.id, "waiting"), (act.id, "active"), (done.id, "completed")):
        with pytest.raises(JobStateError, match=f"cannot promote job {job_id} .*{state}"):
            q.promote(job_id)
    with pytest.raises(JobNotFoundError):
        q.promote("nope")
    with pytest.raises(InvalidOptionError):
        q.promote("")
    assert _dump(r) == before


# -- change_priority --------------------------------------------------------------------------
def test_change_priority_waiting_job_keeps_strict_priority(q):
    jobs = [q.add({"type": "t", "payload": i}) for i in range(4)]  # all NORMAL
    low = q.add({"type": "low"}, priority=5)
    jobs[3].change_priority(1)
    assert jobs[3].priority == 1
    q.change_priority(jobs[0].id, "low")  # back of level 4: after 3s, before the 5
    q.change_priority(low.id, 3)  # back of level 3
    assert q.get_job_status(low.id).priority == 3
    assert _take(q) == [jobs[3].id, jobs[1].id, jobs[2].id, low.id, jobs[0].id]
    assert [e.job_id for e in _events(q, "priority")] == [jobs[3].id, jobs[0].id, low.id]


def test_change_priority_lifo_goes_to_the_front_of_the_level(q):
    a, b, c = (q.add({"type": t}) for t in "abc")
    c.change_priority(3, lifo=True)
    assert _take(q) == [c.id, a.id, b.id]


def test_change_priority_of_a_delayed_job_applies_when_it_is_promoted(q):
    first = q.add({"type": "first"}, priority=2)
    d = q.add({"type": "d"}, delay=3_600_000, priority=5)
    d.change_priority(1)
    assert q.get_job_status(d.id).state is JobState.DELAYED
    assert q.get_job_status(d.id).priority == 1
    d.promote()
    assert _take(q) == [d.id, first.id]


def test_change_priority_bad_input(q, r):
    act = q.add({"type": "act"})
    done = q.add({"type": "done"})
    assert _take(q) == [act.id, done.id]
    _finish(q, [done.id])
    w = q.add({"type": "w"})
    before = _dump(r)
    with pytest.raises(JobStateError, match="active"):
        q.change_priority(act.id, 1)
    with pytest.raises(JobStateError, match="completed"):
        q.change_priority(done.id, 1)
    with pytest.raises(JobNotFoundError):
        q.change_priority("nope", 1)
    for bad in (0, 6, "urgent", True, 2.5):
        with pytest.raises(InvalidOptionError):
            w.change_priority(bad)
    with pytest.raises(InvalidOptionError):
        w.change_priority(1, lifo="yes")
    # the script validates too: an out-of-range priority sent raw is an error, no write
    with pytest.raises(Exception, match=r"priority must be 1\.\.5"):
        q._run(_raw(q, "change_priority", w.id, 9, "0"))
    assert _dump(r) == before


def _raw(q, script, *args):
    def op():
        return (yield q._ops.call(script, *args))
    return op()


# -- update_data ------------------------------------------------------------------------------
def test_update_data_of_waiting_delayed_and_active_jobs(q):
    w = q.add({"type": "t", "payload": 1})
    d = q.add({"type": "t", "payload": 2}, delay=60_000)
    w.update_data({"type": "t", "payload": {"new": True}})
    assert w.data == {"type": "t", "payload": {"new": True}}
    assert q.get_job(w.id).data == {"type": "t", "payload": {"new": True}}
    assert q.get_job(w.id).name == "t"
    q.update_data(d.id, {"type": "t", "payload": 22})
    assert q.get_job(d.id).data["payload"] == 22
    assert _take(q) == [w.id]
    w.update_data({"type": "t", "payload": "checkpoint"})  # active: a processor's checkpoint
    assert q.get_job(w.id).data["payload"] == "checkpoint"
    assert q.get_job(w.id).state is JobState.ACTIVE


def test_update_data_bad_input(q, r):
    w = q.add({"type": "t"})
    done = q.add({"type": "done"})
    q2 = Queue("ctl", q.connection, max_payload_bytes=100)
    assert _take(q, 2) == [w.id, done.id]
    _finish(q, [done.id])
    before = _dump(r)
    with pytest.raises(JobStateError, match="completed"):
        q.update_data(done.id, {"type": "x"})
    with pytest.raises(JobNotFoundError):
        q.update_data("nope", {"type": "x"})
    with pytest.raises(TypeError, match="payload"):
        q.update_data(w.id, {"type": "x", "payload": object()})
    with pytest.raises(TypeError):
        q.update_data(w.id, ["not", "a", "dict"])
    with pytest.raises(PayloadTooLargeError):
        q2.update_data(w.id, {"type": "x", "payload": "y" * 200})
    assert _dump(r) == before


# -- lifo -------------------------------------------------------------------------------------
def test_lifo_first_within_its_level_strict_priority_between(q):
    a = q.add({"type": "a"})
    b = q.add({"type": "b"}, lifo=True)
    c = q.add({"type": "c"}, lifo=True)
    hi = q.add({"type": "hi"}, priority=2)
    lo = q.add({"type": "lo"}, priority=4, lifo=True)
    d = q.add({"type": "d"})
    assert q.get_job(b.id).opts["lifo"] is True
    assert _take(q) == [hi.id, c.id, b.id, a.id, d.id, lo.id]


def test_lifo_bulk_and_delayed(q):
    jobs = q.add_bulk([{"type": "x", "payload": i} for i in range(3)], lifo=True)
    late = q.add({"type": "late"}, lifo=True, delay=3_600_000)
    fifo = q.add({"type": "fifo"})
    late.promote()  # a promoted lifo job goes to the front of its level
    assert _take(q) == [late.id, jobs[2].id, jobs[1].id, jobs[0].id, fifo.id]


def test_lifo_job_requeued_by_the_stalled_sweep_keeps_its_place(q, r):
    a = q.add({"type": "a"})
    b = q.add({"type": "b"}, lifo=True)
    assert _take(q, 1) == [b.id]
    r.zadd("nbq:{ctl}:active", {b.id: 1})  # its lock expired long ago
    back, _ = q._run(q._ops.check_stalled(5, 1000))
    assert back == [b.id]
    assert _take(q) == [b.id, a.id]


def test_lifo_bad_input(q):
    with pytest.raises(InvalidOptionError, match="lifo must be a bool"):
        q.add({"type": "t"}, lifo="yes")


# -- deduplication ----------------------------------------------------------------------------
def test_throttle_with_ttl(q, r):
    first = q.add({"type": "t", "payload": 1}, deduplication={"id": "k", "ttl": 60_000})
    again = q.add({"type": "t", "payload": 2}, deduplication={"id": "k", "ttl": 60_000})
    assert again.id == first.id and again.data["payload"] == 1
    assert q.get_metrics().waiting == 1
    assert q.get_deduplication_job_id("k") == first.id
    ev = _events(q, "deduplicated")
    assert [(e.job_id, e.fields["dedupId"]) for e in ev] == [(first.id, "k")]
    # throttle: the key holds for its ttl even once the job has finished
    assert _take(q) == [first.id]
    _finish(q, [first.id])
    assert q.add({"type": "t"}, deduplication={"id": "k", "ttl": 60_000}).id == first.id
    # ... and no longer once the ttl is over
    r.pexpire("nbq:{ctl}:de:k", 1)
    wait_until(lambda: not r.exists("nbq:{ctl}:de:k"), 5)
    assert q.get_deduplication_job_id("k") is None
    fresh = q.add({"type": "t"}, deduplication={"id": "k", "ttl": 60_000})
    assert fresh.id != first.id


def test_without_ttl_until_the_job_finishes(q, r):
    job = q.add({"type": "t"}, deduplication={"id": "once"})
    assert q.add({"type": "t"}, deduplication={"id": "once"}).id == job.id
    assert _take(q) == [job.id]
    assert q.add({"type": "t"}, deduplication={"id": "once"}).id == job.id  # active: held
    _finish(q, [job.id])
    assert q.get_deduplication_job_id("once") is None
    assert not r.exists("nbq:{ctl}:de:once")  # released by the finish script
    nxt = q.add({"type": "t"}, deduplication={"id": "once"})
    assert nxt.id != job.id
    # a removed job releases it; so does a drained one (the key then points nowhere)
    q.remove(nxt.id)
    third = q.add({"type": "t"}, deduplication={"id": "once"})
    assert third.id not in (job.id, nxt.id)
    q.drain()
    assert q.get_deduplication_job_id("once") is None
    assert q.add({"type": "t"}, deduplication={"id": "once"}).id != third.id


def test_debounce_extend_replace_newest_data_wins_one_job(q, r):
    opts = {"id": "search", "ttl": 60_000, "extend": True, "replace": True}
    first = q.add({"type": "search", "payload": "a"}, delay=60_000, deduplication=opts)
    r.pexpire("nbq:{ctl}:de:search", 5_000)
    due_before = r.zscore("nbq:{ctl}:delayed", first.id)
    for text in ("ab", "abc"):
        job = q.add({"type": "search", "payload": text}, delay=60_000, deduplication=opts)
        assert job.id == first.id and job.data["payload"] == text
    assert r.pttl("nbq:{ctl}:de:search") > 5_000  # extended
    assert r.zscore("nbq:{ctl}:delayed", first.id) >= due_before  # the delay restarted
    assert q.get_metrics().delayed == 1 and q.get_metrics().waiting == 0
    assert [e.fields["replaced"] for e in _events(q, "deduplicated")] == ["1", "1"]
    # the newest data runs, once
    q.promote(first.id)
    fetched = q._run(q._ops.fetch(10, "tok", 30_000)).jobs
    assert [(j.id, j.data["payload"]) for j in fetched] == [(first.id, "abc")]
    # replace only while delayed: now it is active, a later add is just deduplicated
    assert q.add({"type": "search", "payload": "zzz"}, delay=60_000,
                 deduplication=opts).data["payload"] == "abc"


def test_dedup_in_one_bulk_call_and_job_id_idempotency_unchanged(q):
    jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(3)],
                      deduplication={"id": "bulk"})
    assert len({j.id for j in jobs}) == 1 and jobs[2].data["payload"] == 0
    assert q.get_metrics().waiting == 1
    a = q.add({"type": "t"}, job_id="fixed")
    assert q.add({"type": "t", "payload": "other"}, job_id="fixed").id == "fixed"
    # job_id is looked at first: an existing id is returned whatever the dedup id
    assert q.add({"type": "t"}, job_id="fixed", deduplication={"id": "x"}).id == a.id
    assert q.get_deduplication_job_id("x") is None
    mixed = q.add_bulk([({"type": "t"}, {"deduplication": {"id": "m"}}), {"type": "plain"},
                        ({"type": "t"}, {"deduplication": {"id": "m"}})])
    assert mixed[0].id == mixed[2].id != mixed[1].id


@pytest.mark.parametrize("bad, message", [
    ({"id": "k", "ttl": 0}, "ttl must be positive"),
    ({"id": "k", "ttl": -5}, "must not be negative"),
    ({"id": 5}, "id must be a str"),
    ({"id": None}, "id must be a str"),
    ({"id": ""}, "1..500"),
    ({"ttl": 100}, "id must be a str"),
    ({"id": "k", "extend": True}, "extend needs a ttl"),
    ({"id": "k", "replace": 1}, "replace must be a bool"),
    ({"id": "k", "ttl": 100, "debounce": True}, "unknown deduplication"),
    ("k", "must be a dict"),
])
def test_dedup_bad_input(q, r, bad, message):
    with pytest.raises(InvalidOptionError, match=message):
        q.add({"type": "t"}, deduplication=bad)
    assert r.dbsize() == 0
    with pytest.raises(InvalidOptionError):
        q.get_deduplication_job_id(5)


def test_dedup_script_validates_before_writing(q, r):
    q.add({"type": "t"})
    before = _dump(r)
    args, _ = q._ops.prepare({"type": "t"}, {})
    good = list(args)
    bad = [*list(args[:-1]), '{"dd":[5,0,0,0]}']
    with pytest.raises(Exception, match="bad options of job 2"):
        q._run(_raw(q, "add", "", 0, *good, *bad))  # no idempotency token
    with pytest.raises(Exception, match="not a multiple of 7"):
        q._run(_raw(q, "add", "", 0, *good[:-1]))
    assert _dump(r) == before


def test_dedup_is_not_a_default_option():
    with pytest.raises(InvalidOptionError, match="deduplication cannot be a default"):
        Queue("x", default_job_options={"deduplication": {"id": "k"}})


# -- global concurrency -----------------------------------------------------------------------
def test_global_concurrency_caps_every_fetch(q, r):
    q.set_global_concurrency(3)
    assert q.get_global_concurrency() == 3
    for i in range(10):
        q.add({"type": "t", "payload": i})
    first = _take(q, 2, "w1")
    second = _take(q, 5, "w2")
    assert len(first) == 2 and len(second) == 1
    assert _take(q, 5, "w3") == []
    assert r.zcard("nbq:{ctl}:active") == 3
    # a finish frees a slot; with nothing taken by the finisher a marker wakes another worker
    r.delete("nbq:{ctl}:marker")
    _finish(q, first[:1], "w1")
    assert r.llen("nbq:{ctl}:marker") == 1
    assert len(_take(q, 5, "w3")) == 1
    # raising the limit takes effect at the next fetch; None removes it
    q.set_global_concurrency(5)
    assert len(_take(q, 5, "w3")) == 2
    q.set_global_concurrency(None)
    assert q.get_global_concurrency() is None
    assert len(_take(q, 10, "w3")) == 4


def test_global_concurrency_with_rate_limit(conn, r):
    q = Queue("gcrl", conn, global_concurrency=4, rate_limiter={"max": 2, "duration": 60_000})
    for _i in range(10):
        q.add({"type": "t"})
    assert r.hget("nbq:{gcrl}:meta", "gc") == "4"
    got = q._run(q._ops.fetch(10, "w", 30_000))
    assert len(got.jobs) == 2  # the rate limit is the tighter one
    again = q._run(q._ops.fetch(10, "w", 30_000))
    assert again.jobs == [] and again.limit_ttl_ms > 0
    r.delete("nbq:{gcrl}:limiter")
    q.set_global_concurrency(3)
    assert len(q._run(q._ops.fetch(10, "w", 30_000)).jobs) == 1  # now the gc is


def test_global_concurrency_blocks_the_direct_handoff(conn, r):
    """A parked worker is not handed a job while the global limit is reached."""
    q = Queue("gcho", conn, global_concurrency=1)
    q.add({"type": "t"})
    assert len(_take(q, 1, "busy")) == 1
    # a second worker parks: registered idle
    fetched = q._run(q._ops.fetch(1, "idle", 30_000, False))
    assert fetched.jobs == []
    r.zadd("nbq:{gcho}:idle", {"idle|30000": 10**13})
    r.delete("nbq:{gcho}:marker")  # as when the parked worker popped it
    job = q.add({"type": "t"})
    assert q.get_job(job.id).state is JobState.WAITING
    assert not r.exists("nbq:{gcho}:h:idle")
    # without the limit the same add is handed over
    q.set_global_concurrency(None)
    r.zadd("nbq:{gcho}:idle", {"idle|30000": 10**13})
    q.drain()
    r.delete("nbq:{gcho}:marker")
    handed = q.add({"type": "t"})
    assert q.get_job(handed.id).state is JobState.ACTIVE
    assert r.exists("nbq:{gcho}:h:idle")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_global_concurrency_bad_input(conn, r, bad):
    q = Queue("gcbad", conn)
    with pytest.raises(InvalidOptionError, match="global_concurrency must be an int >= 1"):
        q.set_global_concurrency(bad)
    with pytest.raises(InvalidOptionError):
        Queue("gcbad", conn, global_concurrency=bad)
    assert r.dbsize() == 0


def test_global_concurrency_with_workers(conn, r):
    """Two workers of concurrency 4 with global_concurrency=2: never more than 2 bodies."""
    import threading

    q = Queue("gcw", conn, global_concurrency=2)
    lock = threading.Lock()
    running = [0, 0]  # now, max

    def body(job):
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        import time
        time.sleep(0.02)
        with lock:
            running[0] -= 1

    q.add_bulk([{"type": "t"} for _ in range(30)])
    workers = [nbqueue.Worker("gcw", body, conn, concurrency=4).start() for _ in range(2)]
    try:
        wait_until(lambda: q.get_metrics().completed == 30, 60, message="30 jobs done")
    finally:
        for w in workers:
            w.stop()
    assert running[1] == 2


# -- worker registry --------------------------------------------------------------------------
def test_worker_registry_heartbeat_and_expiry(q, r):
    ops = q._ops
    info = {"host": "h1", "pid": 123, "mode": "thread", "concurrency": 4}
    q._run(ops.heartbeat("w-a", 60_000, info, 2))
    q._run(ops.heartbeat("w-b", 60_000, dict(info, pid=456, mode="process"), 0))
    workers = q.get_workers()
    assert [w.id for w in workers] == ["w-a", "w-b"]
    a = workers[0]
    assert isinstance(a, WorkerInfo)
    assert (a.host, a.pid, a.mode, a.concurrency, a.active) == ("h1", 123, "thread", 4, 2)
    server_ms = int(r.time()[0]) * 1000
    assert abs(a.started_at - server_ms) < 60_000 and a.last_heartbeat >= a.started_at
    # a renewal keeps started_at and moves last_heartbeat
    q._run(ops.heartbeat("w-a", 60_000, info, 3))
    again = q.get_workers()[0]
    assert again.started_at == a.started_at and again.active == 3
    # a worker that stops heartbeating drops out after its ttl
    q._run(ops.heartbeat("w-b", 200, dict(info, pid=456), 0))
    wait_until(lambda: [w.id for w in q.get_workers()] == ["w-a"], 10, message="w-b expired")
    # deregistering is immediate
    q._run(ops.deregister("w-a"))
    assert q.get_workers() == []
    assert r.zcard("nbq:{ctl}:workers") <= 1  # the next heartbeat prunes expired entries


def test_heartbeat_script_validates(q, r):
    with pytest.raises(Exception, match="ttl > 0"):
        q._run(_raw(q, "heartbeat", "w", 0, "{}", 0, "0"))
    assert r.dbsize() == 0


# -- facades ----------------------------------------------------------------------------------
def test_manager_facade(conn):
    mgr = QueueManager(conn)
    q = mgr.get_queue("fac", global_concurrency=2)
    assert q.global_concurrency == 2
    assert mgr.get_queue("fac", worker_concurrency=3).global_concurrency == 2
    d = mgr.add_job("fac", {"type": "t"}, delay=60_000, deduplication={"id": "f"})
    assert mgr.add_job("fac", {"type": "t"}, deduplication={"id": "f"}).id == d.id
    mgr.change_job_priority("fac", d.id, 1)
    mgr.update_job_data("fac", d.id, {"type": "t", "payload": 7})
    mgr.promote_job("fac", d.id)
    st = mgr.get_job_status("fac", d.id)
    assert (st.state, st.priority, st.data["payload"]) == (JobState.WAITING, 1, 7)
    lifo = mgr.add_job("fac", {"type": "t"}, lifo=True)
    assert mgr.get_job("fac", lifo.id).opts["lifo"] is True
    mgr.set_global_concurrency("fac", 5)
    assert mgr.queue("fac").get_global_concurrency() == 5
    assert mgr.get_workers("fac") == []


def test_aio_control(conn, r):
    from nbqueue import aio

    async def main():
        q = aio.Queue("actl", conn)
        try:
            d = await q.add({"type": "t"}, delay=60_000)
            await d.change_priority(2)
            await d.update_data({"type": "t", "payload": "new"})
            await d.promote()
            with pytest.raises(JobStateError):
                await q.promote(d.id)
            j = await q.add({"type": "t"}, deduplication={"id": "a", "ttl": 10_000})
            assert (await q.add({"type": "t"}, deduplication={"id": "a"})).id == j.id
            assert await q.get_deduplication_job_id("a") == j.id
            await q.set_global_concurrency(2)
            assert await q.get_global_concurrency() == 2
            assert await q.get_workers() == []
            return await q.get_job_status(d.id)
        finally:
            await q.close()

    st = asyncio.run(main())
    assert (st.state, st.priority, st.data["payload"]) == (JobState.WAITING, 2, "new")


def test_plain_add_arguments_are_unchanged(q):
    """No option used: the extension argument is empty and the add is the plain one."""
    args, _ = q._ops.prepare({"type": "t"}, {})
    assert len(args) == 7 and args[-1] == ""


# -- %nbqueue and the CLI -----------------------------------------------------------------------
@pytest.fixture
def ip(r):
    from IPython.core.getipython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    shell = get_ipython() or start_ipython()
    shell.run_line_magic("load_ext", "nbqueue")
    nbqueue.queue_manager.close()
    try:
        yield shell
    finally:
        nbqueue.queue_manager.close()


def test_magics_promote_priority_workers(ip, r):
    import pandas as pd

    q = nbqueue.queue_manager.get_queue("mctl")
    d = q.add({"type": "t"}, delay=3_600_000)
    w = q.add({"type": "t"})
    ip.run_line_magic("nbqueue", f"priority mctl {d.id} high")
    ip.run_line_magic("nbqueue", f"promote mctl {d.id}")
    st = q.get_job_status(d.id)
    assert (st.state, st.priority) == (JobState.WAITING, 2)
    ip.run_line_magic("nbqueue", f"priority mctl {w.id} 1 --lifo")
    assert _take(q) == [w.id, d.id]
    q._run(q._ops.heartbeat("wk-1", 60_000, {"host": "h", "pid": 7, "mode": "asyncio",
                                             "concurrency": 3}, 1))
    frame = ip.run_line_magic("nbqueue", "workers mctl")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == ["wk-1"]
    assert frame.loc["wk-1", "mode"] == "asyncio" and frame.loc["wk-1", "active"] == 1
    assert str(frame["last_heartbeat"].dtype) == "datetime64[ns, UTC]"
    everywhere = ip.run_line_magic("nbqueue", "workers")  # queues found in Redis
    assert list(everywhere.index) == ["wk-1"] and everywhere.loc["wk-1", "queue"] == "mctl"
    assert ip.run_line_magic("nbqueue", "workers nobody").empty


@pytest.mark.parametrize("line, match", [
    ("promote mctl", "job_id"),
    ("promote mctl 999", "not found"),
    ("promote mctl W", "not delayed"),
    ("priority mctl W", "priority"),
    ("priority mctl W urgent", "unknown priority"),
    ("priority mctl W 9", "between 1"),
    ("priority mctl A 1", "active"),
])
def test_magics_control_bad_usage(ip, line, match):
    from IPython.core.error import UsageError

    q = nbqueue.queue_manager.get_queue("mctl")
    a = q.add({"type": "t"})
    assert _take(q) == [a.id]
    w = q.add({"type": "t"})
    line = line.replace(" W", f" {w.id}").replace(" A ", f" {a.id} ")
    with pytest.raises(UsageError, match=match) as info:
        ip.run_line_magic("nbqueue", line)
    assert "\n" not in str(info.value)


def test_cli_workers(conn, redis_url):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "nbqueue", "--url", redis_url, *args],
                              capture_output=True, text=True, timeout=60)

    assert cli("workers").stdout.strip() == "no workers"
    q = Queue("cliw", conn)
    q._run(q._ops.heartbeat("wk-cli", 60_000, {"host": "hostA", "pid": 42, "mode": "thread",
                                               "concurrency": 5}, 2))
    Queue("other", conn).add({"type": "t"})
    for args in (("workers",), ("workers", "cliw")):
        res = cli(*args)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert lines[0].split() == ["queue", "id", "host", "pid", "mode", "concurrency",
                                    "active", "started", "heartbeat"]
        row = next(ln for ln in lines if ln.startswith("cliw")).split()
        assert row[1:7] == ["wk-cli", "hostA", "42", "thread", "5", "2"]
    assert cli("workers", "other").stdout.strip() == "no workers"


@pytest.mark.parametrize("opt", [{"lifo": True}, {"deduplication": {"id": "k"}}])
def test_recurring_jobs_refuse_lifo_and_deduplication(q, r, opt):
    with pytest.raises(InvalidOptionError, match="recurring job"):
        nbqueue.schedule_recurring_job(q, {"type": "tick"}, every=1000, **opt)
    assert r.dbsize() == 0


def test_throttle_against_a_job_gone_since_returns_its_id(q):
    """A ttl key holds after its job was removed (remove_on_complete=True is common for
    throttled jobs): the add returns the holder's id, state unknown, never a made-up job."""
    first = q.add({"type": "t"}, deduplication={"id": "gone", "ttl": 60_000},
                  remove_on_complete=True)
    assert _take(q) == [first.id]
    _finish(q, [first.id])
    assert q.get_job(first.id) is None
    again = q.add({"type": "t"}, deduplication={"id": "gone", "ttl": 60_000})
    assert again.id == first.id and again.state is JobState.UNKNOWN
    assert q.get_metrics().total == 0


def test_aio_manager_facade(conn, r):
    from nbqueue import aio

    async def main():
        mgr = aio.QueueManager(conn)
        q = mgr.get_queue("aiofac", global_concurrency=3)
        d = await mgr.add_job("aiofac", {"type": "t"}, delay=60_000, lifo=True)
        await mgr.change_job_priority("aiofac", d.id, "critical")
        await mgr.update_job_data("aiofac", d.id, {"type": "t", "payload": 1})
        await mgr.promote_job("aiofac", d.id)
        await mgr.set_global_concurrency("aiofac", 1)
        assert await q.get_global_concurrency() == 1
        assert await mgr.get_workers("aiofac") == []
        st = await mgr.get_job_status("aiofac", d.id)
        await q.close()
        return st

    st = asyncio.run(main())
    assert (st.state, st.priority, st.data["payload"]) == (JobState.WAITING, 1, 1)
