"""What Redis holds, as value objects, and the parsers of script replies (no I/O).

Job records, fetch replies, attempt outcomes (what ``finish.lua`` takes), job ends (what a
result reader sees), events and worker registrations. ``ops`` sends and receives them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ArtifactError, JobFailedError, JobNotFoundError
from .options import JobOptions
from .types import JobState, JobStatus, WorkerInfo


def _int(value: Any, default: int | None = 0) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _json(value: Any, default: Any = None) -> Any:
    if value in (None, ""):
        return default
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value  # not JSON (hand-edited): show it as the raw string


@dataclass(slots=True)
class JobRecord:
    """Everything a job hash holds, parsed. ``data`` is the user's dict."""

    id: str
    name: str
    data: dict[str, Any]
    opts: JobOptions
    state: JobState = JobState.WAITING
    timestamp: int = 0
    attempts_made: int = 0
    progress: Any = 0
    processed_on: int | None = None
    finished_on: int | None = None
    returnvalue: Any = None
    failed_reason: str | None = None
    error_type: str | None = None
    stalled_count: int = 0
    delay: int = 0
    lock: str | None = field(default=None, repr=False)
    # set by a fetch: the first attempt's wait (add or end of delay -> start, server ms);
    # -1 for later attempts and records not from a fetch
    wait_ms: int = field(default=-1, repr=False)
    stacktrace: list[str] = field(default_factory=list, repr=False)
    # set by the add that made the job (in this process): an event stream id at or before
    # every event of this job, where a waiter starts reading (add.lua's reply)
    since: str | None = field(default=None, repr=False)
    # set by a fetch: ``data`` as the JSON text the job hash holds, not decoded yet (see
    # ``loaded``); None once decoded
    raw_data: str | None = field(default=None, repr=False, compare=False)

    @property
    def priority(self) -> int:
        return self.opts.priority

    def loaded(self) -> dict[str, Any]:
        """``data``, decoded now if the fetch kept it as text: a job's data is decoded where
        it is used (a job thread, a process-mode child), not on the worker's loop, and a
        process-mode parent hands the text on untouched. ``ValueError``: corrupt data."""
        raw = self.raw_data
        if raw is not None:
            payload = _loads_data(raw)
            if not isinstance(payload, dict):
                raise ValueError("job data is not a JSON object")
            self.data, self.raw_data = payload, None
        return self.data

    def to_status(self) -> JobStatus:
        return JobStatus(
            id=self.id, name=self.name, data=self.loaded(), state=self.state,
            progress=self.progress, attempts_made=self.attempts_made,
            processed_on=self.processed_on, finished_on=self.finished_on,
            returnvalue=self.returnvalue, failed_reason=self.failed_reason,
            timestamp=self.timestamp, priority=self.priority, delay=self.delay,
            error_type=self.error_type, opts=self.opts.public(),
            stacktrace=list(self.stacktrace),
        )


def parse_state(value: str | None, paused: bool) -> JobState:
    try:
        state = JobState(value or "unknown")
    except ValueError:
        state = JobState.UNKNOWN
    if paused and state is JobState.WAITING:
        return JobState.PAUSED
    return state


def parse_job(job_id: str, h: dict[str, str], paused: bool = False) -> JobRecord | None:
    """A job hash as a record; None for a missing job. Odd fields are tolerated."""
    if not h:
        return None
    prio = _int(h.get("prio"), 3) or 3
    data = _json(h.get("data"), {})
    return JobRecord(
        id=job_id,
        name=h.get("name", ""),
        data=data if isinstance(data, dict) else {"value": data},
        opts=JobOptions.from_stored(h.get("opts"), priority=prio),
        state=parse_state(h.get("state"), paused),
        timestamp=_int(h.get("ts")) or 0,
        attempts_made=_int(h.get("atm")) or 0,
        progress=_json(h.get("prog"), 0),
        processed_on=_int(h.get("pon"), None),
        finished_on=_int(h.get("fon"), None),
        returnvalue=_json(h.get("rv"), None),
        failed_reason=h.get("fr") or None,
        error_type=h.get("et") or None,
        stalled_count=_int(h.get("stc")) or 0,
        delay=_int(h.get("delay")) or 0,
        lock=h.get("lk") or None,
        stacktrace=parse_traces(h.get("st")),
    )


def parse_traces(value: str | None) -> list[str]:
    """The job's ``st`` field (finish.lua): a JSON list of traceback strings."""
    if not value:
        return []
    parsed = _json(value, [])
    if isinstance(parsed, list):
        return [str(t) for t in parsed]
    return [str(parsed)]


FETCH_STRIDE = 11


@dataclass(frozen=True, slots=True)
class CorruptJob:
    """A fetched job whose stored fields cannot be parsed (a value, not an error: the
    worker fails the job with ``reason``)."""

    job_id: str
    lock: str
    reason: str


@dataclass
class Fetched:
    """What the fetch step returned: jobs now locked for us, and when to look again."""

    jobs: list[JobRecord]
    corrupt: list[CorruptJob]
    next_delay_ms: int  # -1: no delayed jobs
    limit_ttl_ms: int  # > 0: the rate limit is reached for this long
    notify: bool = False  # a finish queued dependency notifications: run flows.resolve
    sweep: bool = False  # a finish freed a job nobody held (lock lost): sweep stalled now


# the C scanner json.loads ends up in: (text, index) -> (value, end)
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads_data(text: str) -> Any:
    """``json.loads(text)`` for job data, on the per-job path: the C scanner straight away
    (json.loads is three Python calls and two regex matches around it). Anything it does
    not read whole (leading or trailing whitespace, a BOM, bad JSON, not a str) goes to
    ``json.loads``, which gives the same value or raises the same error."""
    try:
        value, end = _scan_json(text, 0)
    except (StopIteration, TypeError):
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def parse_fetch(reply: list[Any], lazy: bool = False) -> Fetched:
    """A fetch reply's jobs; ``lazy``: each job's data stays JSON text until
    ``JobRecord.loaded`` (a worker's fetch: its job thread or child decodes it)."""
    jobs: list[JobRecord] = []
    corrupt: list[CorruptJob] = []
    for i in range(2, len(reply), FETCH_STRIDE):
        (job_id, lock, name, data, opts, atm, ts, prio, prog, stc,
         wait) = reply[i:i + FETCH_STRIDE]
        try:
            raw = None
            if lazy and type(data) is str and data[:1] == "{":
                payload, raw = {}, data  # decoded where it is used (JobRecord.loaded)
            else:
                payload = _loads_data(data)  # not an object: corrupt, said now
                if not isinstance(payload, dict):
                    raise ValueError("job data is not a JSON object")
            jobs.append(JobRecord(
                id=job_id, name=name, data=payload, raw_data=raw,
                opts=JobOptions.from_stored(opts, priority=int(prio)),
                state=JobState.ACTIVE, timestamp=int(float(ts)), attempts_made=int(atm),
                progress=_json(prog, 0) if prog else 0, stalled_count=int(stc), lock=lock,
                wait_ms=int(wait)))
        except (TypeError, ValueError) as exc:
            corrupt.append(CorruptJob(job_id, lock, f"corrupt job hash: {exc}"))
    return Fetched(jobs, corrupt, int(reply[0]), int(reply[1]))


@dataclass(frozen=True)
class Event:
    """One entry of a queue's event stream, expanded to one job (or none)."""

    id: str
    event: str
    job_id: str | None
    fields: dict[str, str]

    @property
    def timestamp_ms(self) -> int:
        return int(self.id.split("-")[0])


def stream_entries(read: Any) -> list[Any]:
    """The entries of an ``XREAD`` reply for one stream, whatever its shape: RESP2 or RESP3,
    parsed by redis-py (``[[name, entries]]``, ``{name: [entries]}``) or raw from a direct
    call (``{name: entries}``)."""
    if not read:
        return []
    if isinstance(read, list):
        return list(read[0][1] or [])
    value = next(iter(read.values()))
    if value and isinstance(value[0], (list, tuple)) and value[0] \
            and isinstance(value[0][0], (list, tuple)):
        return list(value[0])  # redis-py's RESP3 shape: the entries wrapped once more
    return list(value or [])


def entry_fields(raw: Any) -> dict[str, str]:
    """A stream entry's fields: redis-py's dict, or the raw ``[field, value, ...]`` list a
    direct call (``nbqueue.direct``) reads."""
    if isinstance(raw, dict):
        return dict(raw)
    return dict(zip(raw[0::2], raw[1::2]))


def parse_events(entries: list[Any]) -> list[Event]:
    """Stream entries -> events; a batched entry (``ids``) becomes one event per job.

    One entry can also say what followed in the same call: ``then`` names a second event of
    the same jobs (a job handed to a worker as it is added: ``added`` then ``active``), and
    ``also`` a queue event (``drained``)."""
    out: list[Event] = []
    for entry_id, raw in entries:
        fields = entry_fields(raw)
        name = fields.pop("event", "")
        also = fields.pop("also", None)
        then = fields.pop("then", None)
        if "jobId" in fields:
            ids: list[str | None] = [fields.pop("jobId")]
        elif "ids" in fields:
            ids = json.loads(fields.pop("ids"))
        else:
            ids = [None]
        for event in (name, then) if then else (name,):
            out.extend(Event(entry_id, event, jid, fields) for jid in ids)
        if also:
            out.append(Event(entry_id, also, None, {}))
    return out


def parse_fetch_safe(reply: list[Any], lazy: bool = False) -> Fetched:
    """``parse_fetch``, but a job whose stored fields break the parser in an unexpected way
    (e.g. ``opts`` = ``{"roc": 5}``) becomes a corrupt job the worker fails, instead of an
    exception that kills the worker and strands every job locked by the same fetch."""
    try:
        return parse_fetch(reply, lazy)
    except Exception:
        pass
    head = list(reply[:2])
    fetched = Fetched([], [], int(reply[0]), int(reply[1]))
    for i in range(2, len(reply), FETCH_STRIDE):
        part = reply[i:i + FETCH_STRIDE]
        try:
            one = parse_fetch(head + list(part), lazy)
        except Exception as exc:
            fetched.corrupt.append(CorruptJob(str(part[0]), str(part[1]),
                                              f"corrupt job hash: {type(exc).__name__}: {exc}"))
            continue
        fetched.jobs.extend(one.jobs)
        fetched.corrupt.extend(one.corrupt)
    return fetched


# -- how an attempt ended (the worker -> finish.lua) ------------------------------------------
class OutcomeKind(str, enum.Enum):
    """How an attempt ended, as ``finish.lua`` takes it (one letter on the wire)."""

    COMPLETED = "c"
    FAILED = "f"  # failed at once, never retried (unrecoverable, bad result, corrupt...)
    EXHAUSTED = "x"  # failed, attempts exhausted
    RETRY = "r"  # back to wait (or delayed by the backoff) for another attempt

    def __str__(self) -> str:
        return self.value


@dataclass
class Outcome:
    """How one attempt ended, as the finish script takes it."""

    job: JobRecord
    kind: OutcomeKind
    value: str  # result JSON (c) or failure reason
    error_type: str = ""
    retry_delay: int = 0
    attempts_made: int | None = None  # None: this attempt counts (job.attempts_made + 1)
    stacktrace: str = ""  # a failed attempt's traceback ('' = none), kept on the job

    @property
    def terminal_failure(self) -> bool:
        return self.kind is OutcomeKind.FAILED or self.kind is OutcomeKind.EXHAUSTED


# -- how a job ended, as a reader sees it (results, batches) ----------------------------------
#: The end states of :class:`JobEnd` (``missing``: the job is gone).
END_STATES = ("completed", "failed", "missing")
#: The fields :func:`parse_job_end` reads (HMGET order).
END_FIELDS = ("state", "rv", "fr", "et", "st")


@dataclass
class JobEnd:
    """A job's state as a result reader needs it: ``value`` once completed, ``error`` (the
    exception ``result()`` raises) once failed or gone; neither while it runs."""

    state: str
    value: Any = None
    error: JobFailedError | JobNotFoundError | ArtifactError | None = None

    @property
    def ended(self) -> bool:
        return self.state in END_STATES


def parse_job_end(queue: str, job_id: str, fields: Sequence[Any]) -> JobEnd:
    """HMGET ``END_FIELDS`` of a job hash -> :class:`JobEnd`."""
    state, rv, fr, et, st = fields
    if state is None:
        return JobEnd("missing", error=JobNotFoundError(
            f"job {job_id} of queue {queue!r} is gone (removed, or trimmed by retention "
            "before its result was read)"))
    if state == "completed":
        return JobEnd(state, json.loads(rv) if rv else None)
    if state == "failed":
        traces = parse_traces(st)
        return JobEnd(state, error=JobFailedError(job_id, fr, et,
                                                  traces[-1] if traces else None))
    return JobEnd(str(state))


# -- the worker registry ----------------------------------------------------------------------
def reply_text(value: Any) -> str:
    """A reply value as str (clients configured without decoding give bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(members: Any) -> list[tuple[Any, Any]]:
    """ZRANGE ... WITHSCORES as (member, score) pairs, whatever shape the client returns."""
    if not members:
        return []
    if isinstance(members[0], (list, tuple)):
        return [(m[0], m[1]) for m in members]
    return list(zip(members[0::2], members[1::2]))


def parse_worker(worker_id: str, h: Mapping[str, Any]) -> WorkerInfo | None:
    """A worker registry hash as a ``WorkerInfo`` (None: expired, or not a registration)."""
    if not h or "hb" not in h:
        return None
    try:
        info = json.loads(h.get("info") or "{}")
        if not isinstance(info, dict):
            info = {}
    except ValueError:
        info = {}

    def num(v: Any) -> int:
        try:
            return int(float(v))
        except (TypeError, ValueError):
            return 0

    return WorkerInfo(id=worker_id, host=str(info.get("host", "")), pid=num(info.get("pid")),
                      mode=str(info.get("mode", "")), concurrency=num(info.get("concurrency")),
                      active=num(h.get("active")), started_at=num(h.get("started")),
                      last_heartbeat=num(h.get("hb")), detached=str(info.get("detached", "")),
                      process=str(info.get("proc", "")))


def dead_letter_entry(origin: str, record: JobRecord, reason: str,
                      error_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data and options of the dead-letter job recording a terminal failure; sent by
    :meth:`QueueOps.add_dead_letters`, which stamps ``failed_at`` with the server's clock."""
    try:
        original: Any = record.loaded()
    except ValueError:  # a corrupt job: its text as it was
        original = {"raw": record.raw_data}
    data = {"type": "dead_letter", "payload": {
        "queue": origin, "job_id": record.id, "name": record.name, "data": original,
        "reason": reason, "error_type": error_type,
        "attempts_made": record.attempts_made + 1}}
    return data, {"job_id": f"{origin}:{record.id}:{record.attempts_made + 1}"}
