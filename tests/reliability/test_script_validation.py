"""Issue 12 item 5: no script stops half-way (DESIGN "Durability rules").

Redis keeps what a script wrote before an error, so a script that fails after its first
write can leave a job in no state set (or two). Each script validates what it reads before
that write (includes/common.lua: check_types, check_int, tonumber defaults; pcall for writes
that cannot misplace a job). One case per script below puts a wrong-type key or a corrupt
field in the script's way, runs it (an error is allowed), puts the real key back, and checks
that every job is still in exactly one state set that agrees with its hash
(``rhelpers.check_states``) and that no acknowledged job was lost.

``test_every_script_has_a_case`` fails when a script is added without a case here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import pytest
import redis
from rhelpers import check_states

from nbqueue import Queue
from nbqueue.ops import Outcome, OutcomeKind
from nbqueue.protocol import run_sync

pytestmark = pytest.mark.reliability

Q = "val"
BASE = "nbq:{val}:"


@contextlib.contextmanager
def wrong_type(r: redis.Redis, key: str, value: Callable[[str], Any] | None = None
               ) -> Iterator[None]:
    """``key`` replaced by a string (or what ``value`` writes) for the block; the real one
    (if any) is put back afterwards."""
    saved = key + ":saved-by-test"
    had = r.exists(key)
    if had:
        r.rename(key, saved)
    if value is None:
        r.set(key, "not what nbqueue wrote")
    else:
        value(key)
    try:
        yield
    finally:
        r.delete(key)
        if had:
            r.rename(saved, key)


def _run(q: Queue, op: Any) -> Any:
    return run_sync(q.connection.sync(), op)


def _attempt(fn: Callable[[], Any]) -> BaseException | None:
    try:
        fn()
    except Exception as exc:
        return exc
    return None


def _jobs(r: redis.Redis) -> set[str]:
    return {k[len(BASE + "job:"):] for k in r.scan_iter(match="nbq:{val}:job:*")}


@pytest.fixture
def q(conn: Any, r: redis.Redis) -> Queue:
    return Queue(Q, conn)


def _setup(q: Queue) -> dict[str, Any]:
    """Jobs in every state: 3 waiting, 1 delayed (due), 2 active (locked by w1), 1 completed,
    1 failed."""
    for i in range(5):
        q.add({"type": "t", "payload": i})
    q.add({"type": "d"}, delay=1)
    fetched = _run(q, q._ops.fetch(4, "w1", 60_000))
    jobs = fetched.jobs
    done = [Outcome(jobs[0], OutcomeKind.COMPLETED, "1"),
            Outcome(jobs[1], OutcomeKind.FAILED, "no", "E")]
    _run(q, q._ops.finish(done, {}, 0, "w1", 60_000))
    time.sleep(0.01)  # the delayed job is due now
    return {"active": jobs[2:], "done": jobs[:2]}


def _consistent(r: redis.Redis, before: set[str], deletes: bool) -> None:
    assert check_states(r, Q) == []
    lost = before - _jobs(r)
    assert deletes or not lost, f"jobs lost: {lost}"


DELETING = {"drain", "obliterate"}  # scripts whose purpose is to delete jobs


# -- one case per script -----------------------------------------------------------------------
def case_add(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    with wrong_type(r, BASE + "wait"):
        assert _attempt(lambda: q.add({"type": "t"})) is not None
        assert _attempt(lambda: q.add_bulk([{"type": "t"}, ({"type": "t"}, {"delay": 5})]))
    with wrong_type(r, BASE + "delayed"):
        assert _attempt(lambda: q.add_bulk([{"type": "t"}, ({"type": "t"}, {"delay": 5})]))
    with wrong_type(r, BASE + "ctr"):
        assert _attempt(lambda: q.add({"type": "t"})) is not None
    # a fresh id's key held by a foreign value: that job is left out, the others added
    nxt = int(r.get(BASE + "ctr")) + 2
    r.set(f"{BASE}job:{nxt}", "hand-made")
    err = _attempt(lambda: q.add_bulk([{"type": "t"}] * 3))
    assert err is not None and f"{nxt}" in str(err)
    r.delete(f"{BASE}job:{nxt}")


def case_fetch(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    # the case: the active set briefly a string made a fetch pop waiting jobs and
    # stop before recording them
    with wrong_type(r, BASE + "active"):
        assert _attempt(lambda: _run(q, q._ops.fetch(3, "w2", 60_000))) is not None
    with wrong_type(r, BASE + "wait"):  # a due delayed job is promoted into wait
        assert _attempt(lambda: _run(q, q._ops.fetch(3, "w2", 60_000))) is not None
    with wrong_type(r, BASE + "limiter"):
        r.hset(BASE + "meta", mapping={"rl_max": 10, "rl_dur": 1000})
        assert _attempt(lambda: _run(q, q._ops.fetch(3, "w2", 60_000))) is not None
        r.hdel(BASE + "meta", "rl_max", "rl_dur")
    # a waiting id whose key is not a hash: no job, dropped; the real jobs are fetched
    r.zadd(BASE + "wait", {"bogus": 0})
    r.set(BASE + "job:bogus", "x")
    with wrong_type(r, BASE + "idle", lambda k: r.set(k, "x")):
        got = _run(q, q._ops.fetch(10, "w3", 60_000, unpark=True))
    r.delete(BASE + "job:bogus")
    assert "bogus" not in [j.id for j in got.jobs] and got.jobs


def case_finish(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    a, b = s["active"]
    outcomes = [Outcome(a, OutcomeKind.COMPLETED, "1"),
                Outcome(b, OutcomeKind.RETRY, "again", "E", retry_delay=10)]
    for key in ("completed", "delayed", "active", "ctr"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: _run(q, q._ops.finish(outcomes, {}, 0, "w1", 60_000)))
    # a job whose hash became a string meanwhile: it is no job; the other one finishes
    with wrong_type(r, f"{BASE}job:{b.id}"):
        oks, _ = _run(q, q._ops.finish(outcomes, {}, 0, "w1", 60_000))
    assert oks == [True, False]


def case_extend_locks(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    a, b = s["active"]
    with wrong_type(r, f"{BASE}job:{a.id}"):
        lost = _run(q, q._ops.extend_locks({a.id: a.lock, b.id: b.lock}, 60_000))
    assert lost == [a.id]
    with wrong_type(r, BASE + "active"):
        assert _attempt(lambda: _run(q, q._ops.extend_locks({b.id: b.lock}, 60_000)))


def case_stalled(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    a, b = s["active"]
    r.zadd(BASE + "active", {a.id: 1, b.id: 1})  # both locks expired
    # the case: a non-numeric stalled counter made the sweep stop after removing
    # the job from the active set
    r.hset(f"{BASE}job:{a.id}", mapping={"stc": "x", "atm": "y"})
    with wrong_type(r, BASE + "failed"):
        assert _attempt(lambda: _run(q, q._ops.check_stalled(0, 1))) is not None
    r.delete(BASE + "stalled-check")
    back, failed = _run(q, q._ops.check_stalled(5, 1))
    assert sorted(back) == sorted([a.id, b.id]) and failed == []


def case_remove(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    waiting = r.zrange(BASE + "wait", 0, 0)[0]
    for key in ("delayed", "completed", "failed"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: q.remove(waiting)) is not None
    assert r.zscore(BASE + "wait", waiting) is not None


def case_retry_failed(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    for key in ("wait", "ctr", "notify"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: q.retry_failed()) is not None
    assert r.zcard(BASE + "failed") == 1
    parent = _failed_parent(q, r, s)  # re-armed by a retry: its deps hash in the way
    for key in ("waiting-children", f"deps:{parent}"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: q.retry_failed()) is not None
    assert r.zcard(BASE + "failed") == 2


def case_cancel(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    waiting = r.zrange(BASE + "wait", 0, 0)[0]
    with wrong_type(r, BASE + "failed"):
        assert _attempt(lambda: _run(q, q._ops.cancel(waiting))) is not None
    assert r.zscore(BASE + "wait", waiting) is not None


def case_change_priority(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    waiting = r.zrange(BASE + "wait", 0, 0)[0]
    with wrong_type(r, BASE + "ctr"):
        assert _attempt(lambda: _run(q, q._ops.change_priority(waiting, 1))) is not None
    r.hset(f"{BASE}job:{waiting}", "prio", "x")
    _run(q, q._ops.change_priority(waiting, 2))


def case_promote(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    q.add({"type": "later"}, delay=600_000)
    delayed = r.zrange(BASE + "delayed", -1, -1)[0]
    for key in ("wait", "ctr"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: _run(q, q._ops.promote(delayed))) is not None
    assert r.zscore(BASE + "delayed", delayed) is not None


def case_update_data(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    waiting = r.zrange(BASE + "wait", 0, 0)[0]
    with wrong_type(r, BASE + "events"):  # events never stop a transition
        _run(q, q._ops.update_data(waiting, {"type": "t", "payload": "new"}))


def case_progress(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    a, _ = s["active"]
    with wrong_type(r, BASE + "events"):
        assert _run(q, q._ops.update_progress(a.id, 50)) is True


def case_logs(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    a, b = s["active"]
    with wrong_type(r, f"{BASE}logs:{a.id}"):
        _attempt(lambda: _run(q, q._ops.append_logs({b.id: ["x"], a.id: ["y"]})))


def case_clean(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    waiting = r.zrange(BASE + "wait", 0, -1)
    with wrong_type(r, f"{BASE}job:{waiting[-1]}"):
        assert _attempt(lambda: q.clean(0, 0, "waiting")) is not None
    assert r.zcard(BASE + "wait") == len(waiting)


def case_drain(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    with wrong_type(r, BASE + "delayed"):
        _attempt(lambda: q.drain(delayed=True))


def case_obliterate(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    with wrong_type(r, BASE + "failed"):
        _attempt(lambda: q.obliterate(force=True))


def case_set_paused(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    with wrong_type(r, BASE + "meta"):
        assert _attempt(lambda: q.pause()) is not None
    with wrong_type(r, BASE + "marker", lambda k: r.hset(k, "a", "b")):
        q.resume()  # a wake-up never stops a transition


def case_heartbeat(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    with wrong_type(r, BASE + "workers"):
        assert _attempt(lambda: _run(q, q._ops.heartbeat("w9", 1000, {}, 0))) is not None


def case_metrics(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    # read-only: an error is all it can do
    from nbqueue.metrics import read_queues

    with wrong_type(r, BASE + "wait"):
        assert _attempt(lambda: _run(q, read_queues([Q]))) is not None
    assert _run(q, read_queues([Q]))


def _scheduler(q: Queue) -> Any:
    from nbqueue.scheduler import SchedulerOps

    return SchedulerOps(q._ops)


def case_scheduler_upsert(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    from nbqueue.scheduler import Schedule

    sched = Schedule(every=60_000)
    ops = _scheduler(q)
    for key in ("delayed", "wait", "ctr"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: _run(q, ops.upsert(sched, {"type": "tick"}, {}, "s1")))


def case_scheduler_next(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    ops = _scheduler(q)
    now = int(time.time() * 1000)
    r.hset(BASE + "scheduler:s2", mapping={"cfg": '{"every": 1000}', "next": str(now),
                                           "name": "tick", "data": "{}", "opts": "{}",
                                           "prio": "3", "count": "1"})
    r.zadd(BASE + "schedulers", {"s2": now})
    call = ops.call("scheduler_next", "s2", str(now), str(now + 600_000))
    with wrong_type(r, BASE + "delayed"):
        assert _attempt(lambda: _run(q, _single(call))) is not None


def case_scheduler_remove(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    ops = _scheduler(q)
    with wrong_type(r, BASE + "wait"):
        assert _attempt(lambda: _run(q, ops.remove("s1"))) is not None


def _single(call: Any) -> Any:
    return (yield call)


# -- job dependencies (nbqueue/flows.py) ---------------------------------------------------------
def _waiting_parent(q: Queue, r: redis.Redis) -> tuple[str, str]:
    """A job waiting for one waiting job: (parent id, dependency id)."""
    dep = r.zrange(BASE + "wait", 0, 0)[0]
    parent = q.add({"type": "p"}, depends_on=[dep])
    assert parent.state == "waiting-children"
    return parent.id, dep


def case_add_dependent(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    dep = r.zrange(BASE + "wait", 0, 0)[0]
    for key in ("waiting-children", "ctr"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: q.add({"type": "p"}, depends_on=[dep])) is not None
    with wrong_type(r, BASE + "deps:fan-in"):
        assert _attempt(lambda: q.add({"type": "p"}, depends_on=[dep],
                                      job_id="fan-in")) is not None
    assert not r.exists(BASE + "job:fan-in")


def case_dep_register(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    parent, dep = _waiting_parent(q, r)
    done = s["done"][0].id
    seq = r.hget(f"{BASE}job:{done}", "seq")
    with wrong_type(r, BASE + "notify"):
        assert _attempt(lambda: _run(q, _single(q._ops.call(
            "dep_register", Q, parent, 0, dep, r.hget(f"{BASE}job:{dep}", "seq"), done,
            seq)))) is not None
    assert r.hget(f"{BASE}job:{dep}", "par") == f'["{Q} {parent}"]'  # as before


def case_dep_resolve(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    parent, dep = _waiting_parent(q, r)
    for key in ("wait", "waiting-children", "ctr", f"deps:{parent}"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: _run(q, _single(q._ops.call(
                "dep_resolve", parent, f"{Q} {dep}", "c", "1", 0)))) is not None
    r.hset(f"{BASE}job:{parent}", "dpend", "x")
    assert _attempt(lambda: _run(q, _single(q._ops.call(
        "dep_resolve", parent, f"{Q} {dep}", "c", "1", 0)))) is not None
    r.hset(f"{BASE}job:{parent}", "dpend", "1")
    assert r.hget(f"{BASE}deps:{parent}", f"{Q} {dep}").startswith("p")


def case_dep_due(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    parent, _ = _waiting_parent(q, r)
    r.zadd(BASE + "waiting-children", {parent: 0})  # due for a re-check
    with wrong_type(r, f"{BASE}deps:{parent}"):
        _run(q, _single(q._ops.call("dep_due", 10, 1000)))  # left alone, not an error
    with wrong_type(r, BASE + "waiting-children"):
        assert _attempt(lambda: _run(q, _single(q._ops.call("dep_due", 10, 1000)))) \
            is not None


def _failed_parent(q: Queue, r: redis.Redis, s: dict[str, Any]) -> str:
    """A job that failed on its dependency (dependency_failed): retrying it re-arms it."""
    parent = q.add({"type": "p"}, depends_on=[s["done"][1].id])
    assert r.hget(f"{BASE}job:{parent.id}", "et") == "dependency_failed"
    return parent.id


def case_dep_rearm(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    parent = _failed_parent(q, r, s)
    for key in ("failed", "notify", "waiting-children", f"deps:{parent}"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: _run(q, _single(q._ops.call("dep_rearm", parent)))) \
                is not None
    assert r.zscore(BASE + "failed", parent) is not None


def case_art_put(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    waiting = r.zrange(BASE + "wait", 0, 0)[0]
    for key, file in ((f"art:{waiting}", "0"), ("meta", "1")):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda file=file: _run(q, _single(q._ops.call(
                "art_put", waiting, "x:file:///nowhere", "sha", file)))) is not None
    assert not r.exists(f"{BASE}art:{waiting}")
    assert _run(q, _single(q._ops.call("art_put", "no-such-job", "f", "v", "0"))) == 0
    assert not r.exists(f"{BASE}art:no-such-job")


def case_release_worker(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    held = [j.id for j in s["active"]]  # locked by w1
    for key in ("active", "workers"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: _run(q, _single(q._ops.call("release_worker", "w1")))) \
                is not None
    assert all(r.zscore(BASE + "active", i) > 0 for i in held)  # locks untouched


def case_reclaim(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    a, b = s["active"]  # locked by w1; w1 holds b only
    with wrong_type(r, BASE + "wait"):
        assert _attempt(lambda: _run(q, q._ops.reclaim("w1", [b.id]))) is not None
    assert r.zscore(BASE + "active", a.id) is not None  # untouched
    with wrong_type(r, f"{BASE}job:{b.id}"):  # not a hash: no job of ours, skipped
        assert _run(q, q._ops.reclaim("w1", [])) == [a.id]
    assert r.hget(f"{BASE}job:{a.id}", "state") == "waiting"
    assert r.zscore(BASE + "active", b.id) is not None


def case_leave(q: Queue, r: redis.Redis, s: dict[str, Any]) -> None:
    for key in ("idle", "h:w1", "wake:w1"):
        with wrong_type(r, BASE + key):
            assert _attempt(lambda: _run(q, q._ops.leave("w1", 30000, True))) is not None \
                or key != "wake:w1"
    r.zadd(BASE + "idle", {"w1|30000": time.time() * 1000 + 5000})
    r.rpush(BASE + "h:w1", "0", "not json")
    assert _run(q, q._ops.leave("w1", 30000, False)).jobs == []  # nothing real handed
    assert not r.exists(BASE + "idle", BASE + "h:w1")
    assert r.lrange(BASE + "wake:w1", 0, -1) == ["stop", "stop"]  # (cases 1-2 pushed)
    r.delete(BASE + "wake:w1")


CASES: dict[str, Callable[[Queue, redis.Redis, dict[str, Any]], None]] = {
    name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


def _script_names() -> set[str]:
    return {p.name[:-4] for p in resources.files("nbqueue.scripts").iterdir()
            if p.name.endswith(".lua")}


def test_every_script_has_a_case() -> None:
    missing = _script_names() - set(CASES)
    assert not missing, (f"scripts without a validation case in {__file__}: {sorted(missing)} "
                         "(see includes/common.lua: validate before the first write)")


@pytest.mark.parametrize("script", sorted(CASES))
def test_script_validates_before_its_first_write(script: str, q: Queue,
                                                 r: redis.Redis) -> None:
    state = _setup(q)
    before = _jobs(r)
    CASES[script](q, r, state)
    _consistent(r, before, script in DELETING)
