"""Recurring jobs (job schedulers): cron patterns or fixed intervals, exactly one job per tick.

Design (BullMQ's job schedulers): a scheduler is a hash in its queue's hash slot
(``nbq:{queue}:scheduler:<id>``, listed in the ``nbq:{queue}:schedulers`` ZSET) with the
schedule and a job template. It always has exactly one *pending* job: a delayed job whose id
is deterministic for its tick, ``repeat:<scheduler id>:<tick ms>``. When a worker fetches
that job it computes the next tick here, in Python (croniter, zoneinfo), and calls
``scheduler_next.lua``, which adds the next tick's job only if the fetched tick is still the
scheduler's pending one; adding an existing job id is a no-op. So however many workers,
processes or machines run, each tick gets one job.

Missed ticks (no worker ran for a while) are *run once on catch-up, not as a burst*: the
overdue pending job runs once, and the next tick is the first one after the current time.
Upserting is idempotent: scheduling the same id again keeps the pending tick and only
refreshes the job template; a changed schedule replaces the pending (not yet started) job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .durations import to_ms
from .errors import InvalidOptionError
from .ops import QueueOps
from .protocol import Batch, Call, Op, async_method, sync_method

if TYPE_CHECKING:
    from .queue import QueueBase

log = logging.getLogger("nbqueue.scheduler")

REPEAT_PREFIX = "repeat:"
MAX_ID_LEN = 300
_FORBIDDEN_JOB_OPTIONS = ("delay", "schedule", "job_id")


# -- the schedule (pure: no I/O) ------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """When a scheduler fires: a cron ``pattern`` (in ``tz``) or a fixed interval ``every``."""

    pattern: str | None = None
    every: int | None = None  # ms
    tz: str = "UTC"
    start: int | None = None  # ms since the epoch
    end: int | None = None
    limit: int | None = None

    @property
    def kind(self) -> str:
        return "cron" if self.pattern is not None else "every"

    def to_json(self) -> str:
        """The stored form; equal schedules give equal text (upserts compare it)."""
        return json.dumps({"type": self.kind, "pattern": self.pattern, "every": self.every,
                           "tz": self.tz, "start": self.start, "end": self.end,
                           "limit": self.limit or 0}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        d = json.loads(text)
        return cls(pattern=d.get("pattern"), every=d.get("every"), tz=d.get("tz") or "UTC",
                   start=d.get("start"), end=d.get("end"), limit=d.get("limit") or None)

    def first_tick(self, now: int) -> int | None:
        """The first tick of a new schedule: for ``every`` now (or the first interval
        boundary after ``start``), for cron the first match after now (and ``start``)."""
        if self.every is not None:
            if self.start is None or self.start >= now:
                tick = now if self.start is None else self.start
            else:
                tick = self.start + self.every * -(-(now - self.start) // self.every)
        else:
            base = now if self.start is None else max(now, self.start - 1)
            tick = self._cron_after(base)
        return tick if self.end is None or tick <= self.end else None

    def next_tick(self, tick: int, now: int) -> int | None:
        """The tick after ``tick``: the first one after ``max(tick, now)`` (missed ticks are
        skipped: catch-up runs once). ``None`` when past ``end``."""
        if self.every is not None:
            steps = 1 if now < tick else (now - tick) // self.every + 1
            nxt = tick + steps * self.every
        else:
            nxt = self._cron_after(max(tick, now))
        return nxt if self.end is None or nxt <= self.end else None

    def _cron_after(self, ms: int) -> int:
        """The first match after ``ms``. The pattern is matched on the zone's wall clock, in
        naive local time: croniter's own handling of aware times across a DST change
        differs between its releases (2.0.7 put New York's 9 AM at 12:00 UTC the day the
        clocks moved). A wall time the clocks skip runs when they jump; one they repeat
        runs at its first occurrence."""
        assert self.pattern is not None
        tz = ZoneInfo(self.tz)
        local = datetime.fromtimestamp(ms / 1000, tz).replace(tzinfo=None)
        matches = croniter(self.pattern, local)
        while True:  # (past ms only in a repeated hour: a few steps)
            at = _wall_ms(matches.get_next(datetime), tz)
            if at > ms:
                return at


def _wall_ms(wall: datetime, tz: ZoneInfo) -> int:
    """Epoch ms of the naive local time ``wall`` in ``tz``: its first occurrence, or for a
    time the clocks skip (spring forward) the instant they jump past it."""
    first = wall.replace(tzinfo=tz, fold=0)
    if first.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None) == wall:
        return round(first.timestamp() * 1000)
    # in a gap, fold=1 reads the wall time with the offset after the change (an instant
    # before the jump), fold=0 with the one before (an instant after): search between
    lo, hi = int(wall.replace(tzinfo=tz, fold=1).timestamp()), int(first.timestamp()) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi * 1000


def _epoch_ms(value: Any, what: str, tz: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=ZoneInfo(tz))
        return round(value.timestamp() * 1000)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    raise InvalidOptionError(f"{what} must be a datetime or epoch milliseconds, not {value!r}")


def _zone(tz: Any) -> str:
    if tz is None:
        return "UTC"
    if isinstance(tz, ZoneInfo):
        return tz.key
    if tz is timezone.utc:
        return "UTC"
    if not isinstance(tz, str) or not tz:
        raise InvalidOptionError(f"tz must be an IANA time zone name like 'Europe/Paris', "
                                 f"not {tz!r}")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidOptionError(f"unknown time zone {tz!r}; use an IANA name like "
                                 "'Europe/Paris' or 'UTC'") from None
    return tz


def make_schedule(cron: str | None = None, *, every: Any = None, tz: Any = None,
                  start: Any = None, end: Any = None, limit: int | None = None) -> Schedule:
    """Validate the user's schedule options (raises :class:`InvalidOptionError`)."""
    if (cron is None) == (every is None):
        raise InvalidOptionError("give exactly one of a cron pattern or every= (an interval)")
    zone = _zone(tz)
    pattern = None
    every_ms = None
    if cron is not None:
        if not isinstance(cron, str) or not croniter.is_valid(cron.strip()):
            raise InvalidOptionError(f"invalid cron pattern {cron!r}; expected 5 fields "
                                     "(minute hour day month weekday), e.g. '*/5 * * * *'")
        pattern = " ".join(cron.split())
        try:  # a valid-looking pattern can still never match ("0 0 30 2 *": February 30th)
            croniter(pattern, datetime.now(ZoneInfo(zone))).get_next(datetime)
        except Exception as exc:
            raise InvalidOptionError(f"cron pattern {cron!r} never matches a date "
                                     f"({type(exc).__name__})") from None
    else:
        every_ms = to_ms(every, "every", allow_zero=False)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise InvalidOptionError(f"limit must be an int >= 1: {limit!r}")
    s, e = _epoch_ms(start, "start", zone), _epoch_ms(end, "end", zone)
    if s is not None and e is not None and e < s:
        raise InvalidOptionError("end must not be before start")
    return Schedule(pattern, every_ms, zone, s, e, limit)


def validate_scheduler_id(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidOptionError(f"scheduler_id must be a str, not {type(value).__name__}")
    if not value or len(value) > MAX_ID_LEN or "\n" in value:
        raise InvalidOptionError(f"scheduler_id must have 1..{MAX_ID_LEN} characters on one "
                                 "line")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidOptionError(f"scheduler_id {value!r} is not valid UTF-8 text "
                                 "(it holds a lone surrogate)") from None
    return value


def default_scheduler_id(queue: str, data: Mapping[str, Any], schedule: Schedule) -> str:
    """``<queue>:<job type>:<pattern>`` or ``<queue>:<job type>:every:<ms>``."""
    kind = data.get("type") if isinstance(data.get("type"), str) else "default"
    what = schedule.pattern if schedule.pattern is not None else f"every:{schedule.every}"
    return f"{queue}:{kind}:{what}"


def parse_tick_job_id(job_id: str) -> tuple[str, str] | None:
    """(scheduler id, tick) of a scheduled job's id ``repeat:<id>:<tick ms>``, else None."""
    if not job_id.startswith(REPEAT_PREFIX):
        return None
    sid, _, tick = job_id[len(REPEAT_PREFIX):].rpartition(":")
    return (sid, tick) if sid and tick.isdigit() else None


# -- what a scheduler looks like to users ----------------------------------------------
@dataclass(frozen=True)
class SchedulerInfo:
    """One job scheduler: its schedule, job template and pending tick."""

    id: str
    queue: str
    kind: str  # "cron" | "every"
    pattern: str | None
    every: int | None  # ms
    tz: str
    start: int | None
    end: int | None
    limit: int | None
    count: int  # jobs made so far (since the schedule last changed)
    next_run: int | None  # ms of the pending tick; None once exhausted
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    status: str = ""  # what the last upsert did: created|updated|unchanged|rearmed|exhausted

    @property
    def next_job_id(self) -> str | None:
        return None if self.next_run is None else f"{REPEAT_PREFIX}{self.id}:{self.next_run}"

    @property
    def next_run_at(self) -> datetime | None:
        """The pending tick as an aware UTC datetime."""
        if self.next_run is None:
            return None
        return datetime.fromtimestamp(self.next_run / 1000, timezone.utc)


def _info(queue: str, sid: str, h: Mapping[str, str], status: str = "") -> SchedulerInfo:
    sched = Schedule.from_json(h.get("cfg") or "{}")
    nxt = int(h.get("next") or 0)
    try:
        data = json.loads(h.get("data") or "{}")
    except ValueError:
        data = {}
    return SchedulerInfo(id=sid, queue=queue, kind=sched.kind, pattern=sched.pattern,
                         every=sched.every, tz=sched.tz, start=sched.start, end=sched.end,
                         limit=sched.limit, count=int(h.get("count") or 0),
                         next_run=nxt or None, name=h.get("name", ""),
                         data=data if isinstance(data, dict) else {}, status=status)


# -- the operations (sans-I/O) ---------------------------------------------------------
class SchedulerOps:
    """The scheduler operations of one queue, as generators of Redis calls."""

    def __init__(self, ops: QueueOps) -> None:
        self.ops = ops
        self.zset = ops.keys.schedulers
        self.hash_prefix = ops.keys.scheduler_prefix

    def call(self, script: str, *args: Any) -> Call:
        """``script`` with the queue's key prefix plus the schedulers ZSET."""
        k = self.ops.keys
        return Call(script, (*k.script_keys, self.zset),
                    (k.job_prefix, "", self.ops.events_maxlen, self.hash_prefix, *args))

    def server_now(self) -> Op[int]:
        """The Redis server's clock in ms: every process computes ticks from the same time."""
        t = yield Call.cmd("TIME")
        return int(t[0]) * 1000 + int(t[1]) // 1000

    def upsert(self, schedule: Schedule, data: Mapping[str, Any],
               job_options: Mapping[str, Any], scheduler_id: str | None) -> Op[SchedulerInfo]:
        bad = [k for k in _FORBIDDEN_JOB_OPTIONS if job_options.get(k) is not None]
        if bad:
            raise InvalidOptionError(f"{', '.join(bad)} cannot be used with a recurring job "
                                     "(the schedule decides when it runs)")
        unsupported = [k for k in ("lifo", "deduplication") if job_options.get(k) is not None]
        if unsupported:
            raise InvalidOptionError(f"{', '.join(unsupported)} cannot be used with a recurring "
                                     "job (each tick is one job, with its own id)")
        if not isinstance(data, Mapping):
            raise TypeError(f"job data must be a dict, not {type(data).__name__}")
        args, _ = self.ops.prepare(data, job_options)
        sid = validate_scheduler_id(scheduler_id) if scheduler_id is not None else \
            default_scheduler_id(self.ops.name, data, schedule)
        name, text, opts, prio = args[1], args[2], args[3], args[4]
        now = yield from self.server_now()
        after = now
        for _ in range(5):
            first = schedule.first_tick(after)
            if first is None:
                raise InvalidOptionError(f"the schedule of {sid!r} has no run before its end")
            status, tick = yield self.call("scheduler_upsert", sid, schedule.to_json(),
                                           first, name, text, opts, prio)
            if status != "stale":
                break
            # A tick after `first` was already handed out: start after it.
            after = int(tick) + 1
            if schedule.every is not None and schedule.start is None:
                after = int(tick) + schedule.every
        else:  # pragma: no cover - the scheduler keeps moving under us
            raise InvalidOptionError(f"could not place the first tick of {sid!r}")
        yield from self.ops.ensure_registered()  # its ticks are added by Lua, not by add()
        h = yield Call.cmd("HGETALL", self.hash_prefix + sid)
        return _info(self.ops.name, sid, h, str(status))

    def list_all(self) -> Op[list[SchedulerInfo]]:
        """All schedulers of the queue, soonest pending tick first (exhausted ones first)."""
        ids = yield Call.cmd("ZRANGE", self.zset, 0, -1)
        if not ids:
            return []
        hashes = yield Batch([Call.cmd("HGETALL", self.hash_prefix + i) for i in ids])
        return [_info(self.ops.name, i, h) for i, h in zip(ids, hashes, strict=True) if h]

    def get(self, scheduler_id: str) -> Op[SchedulerInfo | None]:
        h = yield Call.cmd("HGETALL", self.hash_prefix + scheduler_id)
        return _info(self.ops.name, scheduler_id, h) if h else None

    def remove(self, scheduler_id: str) -> Op[bool]:
        return bool(int((yield self.call("scheduler_remove", scheduler_id))))

    def follow(self, job_ids: Sequence[str]) -> Op[list[int]]:
        """After a worker fetched these jobs: queue the next tick of the scheduled ones."""
        ticks = [t for t in (parse_tick_job_id(j) for j in job_ids) if t is not None]
        if not ticks:
            return []
        replies = yield Batch([Call.cmd("TIME")] + [
            Call.cmd("HMGET", self.hash_prefix + sid, "cfg", "next") for sid, _ in ticks])
        t = replies[0]
        now = int(t[0]) * 1000 + int(t[1]) // 1000
        args: list[Any] = []
        for (sid, tick), (cfg, pending) in zip(ticks, replies[1:], strict=True):
            if cfg is None or pending != tick:
                continue  # removed, or already advanced by another fetch of this tick
            nxt = Schedule.from_json(cfg).next_tick(int(tick), now)
            args += [sid, tick, "" if nxt is None else nxt]
        if not args:
            return []
        return [int(x) for x in (yield self.call("scheduler_next", *args))]


class TickFollower:
    """Used by the worker engine: queues the next tick of each scheduled job it fetches.

    A failed call (Redis hiccup) is kept and retried with the next fetch, so a tick's
    follow-up is delayed, never lost; the tick check in Lua makes retries harmless.
    """

    def __init__(self, ops: QueueOps) -> None:
        self.sched = SchedulerOps(ops)
        self._pending: list[str] = []

    async def follow(self, call: Callable[[Op[Any]], Awaitable[Any]],
                     records: Sequence[Any]) -> None:
        ids = self._pending + [r.id for r in records if r.id.startswith(REPEAT_PREFIX)]
        if not ids:
            return
        self._pending = []
        try:
            await call(self.sched.follow(ids))
        except Exception as exc:
            log.warning("could not queue the next tick of %s (retrying later): %s", ids, exc)
            self._pending = ids[-1000:]


# -- binding to the two executors ------------------------------------------------------
class JobSchedulerBase:
    """The schedulers of one queue, defined once; bound to sync and asyncio below."""

    def __init__(self, queue: QueueBase) -> None:
        self.queue = queue
        self._ops = SchedulerOps(queue._ops)

    def _run(self, op: Op[Any]) -> Any:
        return self.queue._run(op)

    def _upsert(self, data: Mapping[str, Any], cron: str | None = None, *, every: Any = None,
                tz: Any = None, scheduler_id: str | None = None, start: Any = None,
                end: Any = None, limit: int | None = None,
                **job_options: Any) -> Op[SchedulerInfo]:
        """Create or update (by id) the scheduler that adds ``data`` as a job every tick."""
        schedule = make_schedule(cron, every=every, tz=tz, start=start, end=end, limit=limit)
        return (yield from self._ops.upsert(schedule, data, job_options, scheduler_id))

    def _list(self) -> Op[list[SchedulerInfo]]:
        return (yield from self._ops.list_all())

    def _get(self, scheduler_id: str) -> Op[SchedulerInfo | None]:
        return (yield from self._ops.get(scheduler_id))

    def _remove(self, scheduler_id: str) -> Op[bool]:
        return (yield from self._ops.remove(scheduler_id))


class JobScheduler(JobSchedulerBase):
    """Blocking scheduler methods of one queue."""

    upsert = sync_method(JobSchedulerBase._upsert)
    list = sync_method(JobSchedulerBase._list)
    get = sync_method(JobSchedulerBase._get)
    remove = sync_method(JobSchedulerBase._remove)


class AsyncJobScheduler(JobSchedulerBase):
    """Awaitable scheduler methods of one ``nbqueue.aio.Queue``."""

    upsert = async_method(JobSchedulerBase._upsert)
    list = async_method(JobSchedulerBase._list)
    get = async_method(JobSchedulerBase._get)
    remove = async_method(JobSchedulerBase._remove)


__all__ = ["AsyncJobScheduler", "JobScheduler", "Schedule", "SchedulerInfo", "make_schedule"]
