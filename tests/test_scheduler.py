"""Recurring jobs (job schedulers): validation, time zones, upserts, exactly one job per tick."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis

import nbqueue
import nbqueue.aio
from nbqueue import (
    InvalidOptionError,
    Queue,
    Worker,
    list_schedulers,
    remove_scheduler,
    schedule_recurring_job,
)
from nbqueue.connection import Connection
from nbqueue.scheduler import Schedule, make_schedule, parse_tick_job_id

from .helpers import wait_for

DATA = {"type": "digest", "payload": {}}



def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def ticks_of(ids: list[str]) -> list[int]:
    out = []
    for i in ids:
        parsed = parse_tick_job_id(i)
        assert parsed is not None, i
        out.append(int(parsed[1]))
    return sorted(out)


def all_job_ids(r: redis.Redis, name: str) -> list[str]:
    ids: list[str] = []
    for state in ("wait", "active", "delayed", "completed", "failed"):
        ids += r.zrange(f"nbq:{{{name}}}:{state}", 0, -1)
    return ids


# -- pure: schedules and ticks ----------------------------------------------------------
def test_invalid_cron_and_time_zone_are_clear_errors(conn: Connection, r: redis.Redis) -> None:
    q = Queue("sched", connection=conn)
    with pytest.raises(InvalidOptionError, match="invalid cron pattern"):
        schedule_recurring_job(q, DATA, "61 * * * *")
    with pytest.raises(InvalidOptionError, match="unknown time zone"):
        schedule_recurring_job(q, DATA, "0 9 * * *", tz="Mars/Olympus_Mons")
    with pytest.raises(InvalidOptionError, match="exactly one"):
        schedule_recurring_job(q, DATA)
    with pytest.raises(InvalidOptionError, match="exactly one"):
        schedule_recurring_job(q, DATA, "* * * * *", every=1000)
    with pytest.raises(InvalidOptionError, match="every"):
        schedule_recurring_job(q, DATA, every=0)
    with pytest.raises(InvalidOptionError, match="limit"):
        schedule_recurring_job(q, DATA, every="5m", limit=0)
    with pytest.raises(InvalidOptionError, match="recurring"):
        schedule_recurring_job(q, DATA, every="5m", delay=1000)
    with pytest.raises(InvalidOptionError, match="unknown job option"):
        schedule_recurring_job(q, DATA, every="5m", colour="red")
    assert r.keys("*") == []  # nothing reached Redis


def test_cron_ticks_follow_time_zones_and_dst() -> None:
    ny = make_schedule("0 9 * * *", tz="America/New_York")
    # US DST starts 2024-03-10: 9 AM New York is 14:00 UTC before, 13:00 UTC after.
    t1 = ny.first_tick(ms(datetime(2024, 3, 9, 12, tzinfo=timezone.utc)))
    assert t1 is not None
    t2 = ny.next_tick(t1, t1)
    t3 = ny.next_tick(t2, t2)  # type: ignore[arg-type]
    utc = [datetime.fromtimestamp(t / 1000, timezone.utc) for t in (t1, t2, t3)]  # type: ignore[operator]
    assert [(d.day, d.hour) for d in utc] == [(9, 14), (10, 13), (11, 13)]
    # Berlin springs forward at 02:00 on 2024-03-31: the non-existent 02:30 runs at 03:00.
    berlin = make_schedule("30 2 * * *", tz=ZoneInfo("Europe/Berlin"))
    t = berlin.first_tick(ms(datetime(2024, 3, 30, 12, tzinfo=timezone.utc)))
    local = datetime.fromtimestamp(t / 1000, ZoneInfo("Europe/Berlin"))  # type: ignore[operator]
    assert (local.day, local.hour, local.minute) == (31, 3, 0)
    # New York repeats 01:00-02:00 on 2024-11-03: 01:30 runs once, at its first (EDT) pass.
    early = make_schedule("30 1 * * *", tz="America/New_York")
    t = early.first_tick(ms(datetime(2024, 11, 3, 4, tzinfo=timezone.utc)))
    assert datetime.fromtimestamp(t / 1000, timezone.utc).hour == 5  # type: ignore[operator]
    t2 = early.next_tick(t, t + 3_600_000)  # type: ignore[arg-type]  # during the 2nd pass
    assert datetime.fromtimestamp(t2 / 1000, timezone.utc) == \
        datetime(2024, 11, 4, 6, 30, tzinfo=timezone.utc)  # type: ignore[operator]
    # Without tz, patterns are UTC.
    assert make_schedule("0 9 * * *").tz == "UTC"


def test_missed_ticks_are_skipped_not_replayed() -> None:
    every = make_schedule(every="1m")
    assert every.first_tick(1_000_000) == 1_000_000  # every= starts at once
    # the pending tick at 1_000_000 ran 10.5 minutes late: next is the next grid point
    assert every.next_tick(1_000_000, 1_000_000 + 630_000) == 1_000_000 + 660_000
    assert every.next_tick(1_000_000, 1_000_000) == 1_060_000
    cron = make_schedule("*/5 * * * *")
    base = ms(datetime(2024, 1, 1, 0, 0, tzinfo=timezone.utc))
    late = base + 3_600_000 + 1  # an hour of downtime
    assert cron.next_tick(base, late) == base + 3_600_000 + 300_000
    with_end = make_schedule(every=1000, start=base, end=base + 2500)
    assert with_end.first_tick(base + 10) == base + 1000
    assert with_end.next_tick(base + 2000, base + 2000) is None
    assert Schedule.from_json(with_end.to_json()) == with_end


# -- Redis: upserts, listing, removing --------------------------------------------------
def test_upsert_by_id_never_makes_a_second_schedule(conn: Connection, r: redis.Redis) -> None:
    q = Queue("sched", connection=conn)
    a = schedule_recurring_job(q, DATA, "0 9 * * *", tz="Europe/Paris", priority="high")
    assert a.status == "created"
    assert a.id == "sched:digest:0 9 * * *"
    seq = r.hget(f"nbq:{{sched}}:job:{a.next_job_id}", "seq")
    b = schedule_recurring_job(q, DATA, "0 9 * * *", tz="Europe/Paris", priority="high")
    assert b.status == "unchanged" and b.next_run == a.next_run
    assert r.hget(f"nbq:{{sched}}:job:{a.next_job_id}", "seq") == seq  # not even re-added
    # new data, same schedule: the pending job carries the new data, same tick
    c = schedule_recurring_job(q, {"type": "digest", "payload": {"v": 2}}, "0 9 * * *",
                               tz="Europe/Paris")
    assert c.status == "unchanged" and c.next_run == a.next_run
    assert len(list_schedulers(q)) == 1
    assert all_job_ids(r, "sched") == [a.next_job_id]
    job = q.get_job(a.next_job_id)  # type: ignore[arg-type]
    assert job is not None and job.data["payload"] == {"v": 2} and job.state == "delayed"
    # the pending tick is 9:00 in Paris
    assert a.next_run_at is not None
    local = a.next_run_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 0)
    # same id, another pattern: updated in place, the old pending job replaced
    d = schedule_recurring_job(q, DATA, "30 7 * * 1", scheduler_id=a.id)
    assert d.status == "updated" and d.pattern == "30 7 * * 1" and d.tz == "UTC"
    assert all_job_ids(r, "sched") == [d.next_job_id]
    assert [s.id for s in list_schedulers(q)] == [a.id]
    # every key in the queue's slot, but the registry of queue names (keys.registry_key)
    assert all("{sched}" in k for k in r.keys("*") if k != "nbq:queues")
    assert remove_scheduler(q, a.id) is True
    assert remove_scheduler(q, a.id) is False
    assert list_schedulers(q) == [] and all_job_ids(r, "sched") == []


def test_schedule_by_queue_name_and_rearm_after_drain(conn: Connection, r: redis.Redis) -> None:
    info = schedule_recurring_job(nbqueue.QueueName.CACHE_WARMUP,
                                  {"type": "warmup_cache", "payload": {}}, "*/5 * * * *")
    assert info.queue == "cache_warmup" and info.next_run is not None
    assert info.next_run % 300_000 == 0
    q = nbqueue.queue_manager.queue("cache_warmup")
    q.drain(delayed=True)  # the pending tick is gone...
    again = schedule_recurring_job("cache_warmup", {"type": "warmup_cache", "payload": {}},
                                   "*/5 * * * *")
    assert again.status == "rearmed"  # ...and re-running the cell brings it back
    assert all_job_ids(r, "cache_warmup") == [again.next_job_id]


def test_obliterate_removes_schedulers(conn: Connection, r: redis.Redis) -> None:
    q = Queue("gone", connection=conn)
    schedule_recurring_job(q, DATA, every="1h", scheduler_id="a")
    schedule_recurring_job(q, DATA, "0 9 * * *", scheduler_id="b")
    assert len(list_schedulers(q)) == 2
    q.obliterate()
    assert list_schedulers(q) == [] and r.keys("*") == []


def test_two_processes_upserting_make_one_schedule(redis_url: str, r: redis.Redis) -> None:
    code = (
        "import nbqueue, sys\n"
        "for i in range(25):\n"
        "    nbqueue.schedule_recurring_job('race', {'type': 't', 'payload': {'i': i % 2}},\n"
        "                                   every='1h', scheduler_id='s')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
             for _ in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert len(r.zrange("nbq:{race}:schedulers", 0, -1)) == 1
    assert len(all_job_ids(r, "race")) == 1


# -- workers: exactly one job per tick -------------------------------------------------
def test_every_tick_runs_exactly_once_across_processes(conn: Connection, r: redis.Redis,
                                                       redis_url: str) -> None:
    every = 100

    def record(job: Any) -> str:
        import os

        import redis as _redis

        client = _redis.Redis.from_url(os.environ["NBQUEUE_REDIS_URL"])
        client.rpush("ran", job.id)
        client.close()
        return str(job.id)

    q = Queue("tick", connection=conn)
    info = schedule_recurring_job(q, {"type": "tick", "payload": {}}, every=every)
    workers = [Worker("tick", record, connection=conn, mode="process", concurrency=2,
                      processes=2, stalled_interval=1000, lock_duration=2000),
               Worker("tick", record, connection=conn, mode="thread", concurrency=2)]
    try:
        for w in workers:
            w.start()
        wait_for(lambda: r.llen("ran") >= 8, 40, "8 ticks")
    finally:
        schedulers = list_schedulers(q)
        remove_scheduler(q, info.id)
        for w in workers:
            w.stop(timeout=10)
    ran = r.lrange("ran", 0, -1)
    assert len(ran) == len(set(ran)), "a tick ran twice"
    ticks = ticks_of(ran)
    assert len(set(ticks)) == len(ticks)
    assert all((b - a) % every == 0 and b > a for a, b in itertools.pairwise(ticks))
    assert ticks[0] == info.next_run
    assert len(schedulers) == 1


def test_catch_up_runs_once_not_a_burst(conn: Connection, r: redis.Redis) -> None:
    every = 200
    q = Queue("catchup", connection=conn)
    info = schedule_recurring_job(q, {"type": "c", "payload": {}}, every=every)
    first = info.next_run
    assert first is not None
    time.sleep(5 * every / 1000)  # no worker: at least five ticks are missed
    with Worker("catchup", lambda job: job.id, connection=conn):
        wait_for(lambda: r.zcard("nbq:{catchup}:completed") >= 1, what="the catch-up run")
    ids = all_job_ids(r, "catchup")
    done = q.get_job(f"repeat:{info.id}:{first}")
    assert done is not None and done.processed_on is not None
    ticks = ticks_of(ids)
    # the late tick ran once; nothing was made for the ticks missed before it ran
    assert ticks[0] == first
    assert not [t for t in ticks if first < t <= done.processed_on]
    assert ticks[1] - first >= 5 * every and (ticks[1] - first) % every == 0


def test_limit_stops_the_scheduler(conn: Connection, r: redis.Redis) -> None:
    q = Queue("limited", connection=conn)
    info = schedule_recurring_job(q, {"type": "l", "payload": {}}, every=50, limit=3)
    with Worker("limited", lambda job: None, connection=conn):
        wait_for(lambda: list_schedulers(q)[0].next_run is None, what="exhaustion")
        wait_for(lambda: r.zcard("nbq:{limited}:completed") == 3, what="3 jobs")
    assert r.zcard("nbq:{limited}:delayed") + r.zcard("nbq:{limited}:wait") == 0
    final = list_schedulers(q)[0]
    assert final.count == 3 and final.limit == 3 and final.id == info.id
    again = schedule_recurring_job(q, {"type": "l", "payload": {}}, every=50, limit=3)
    assert again.status == "exhausted"  # re-running the cell does not restart it


def test_aio_schedulers(conn: Connection, r: redis.Redis) -> None:
    async def main() -> None:
        q = nbqueue.aio.Queue("aq", connection=conn)
        info = await nbqueue.aio.schedule_recurring_job(q, DATA, every="5m",
                                                        scheduler_id="five")
        assert info.status == "created" and info.every == 300_000
        listed = await nbqueue.aio.list_schedulers(q)
        assert [s.id for s in listed] == ["five"]
        assert await nbqueue.aio.remove_scheduler(q, "five") is True
        assert await nbqueue.aio.list_schedulers(q) == []
        await q.close()

    asyncio.run(main())
