"""Every queue operation, written once as a sans-I/O generator (see ``protocol``).

``QueueOps`` builds script calls and parses replies; the sync ``Queue``, the asyncio
``nbqueue.aio.Queue`` and the worker engine run these same generators.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import serialization
from .dataplane import sweep
from .durations import to_ms
from .errors import (
    InvalidOptionError,
    JobActiveError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    NbqueueError,
    NotReplicatedError,
    QueueBusyError,
    ResultTimeoutError,
)
from .keys import DEFAULT_PREFIX, QueueKeys, registry_key
from .liveness import WorkerWatch
from .options import JobOptions, default_options, merge_options, parse_priority
from .protocol import Batch, Call, Op
from .records import (
    FETCH_STRIDE,
    CorruptJob,
    Event,
    Fetched,
    JobRecord,
    parse_events,
    parse_fetch,
    parse_job,
    parse_traces,
)
from .types import JobState, QueueMetrics, WorkerInfo

_log = logging.getLogger("nbqueue.ops")
EVENTS_MAXLEN = 10_000
LOG_CAP_LINES = 1000  # lines kept per job log (the newest)
LOG_LINE_CHARS = 10_000  # a longer line is cut (its end is kept)
REGISTER_EVERY_S = 60.0  # how often a queue object re-adds its name to the registry
FINISHED = (JobState.COMPLETED, JobState.FAILED)

#: Jobs per add.lua call: a bulk add is sent in chunks so that no single script call keeps
#: Redis busy (every other client waits meanwhile) for more than a few tens of ms.
BULK_CHUNK_JOBS = 1000
#: ... and about this many bytes of job data and options per call.
BULK_CHUNK_BYTES = 1_000_000
#: Jobs per call of the scripts that sweep a whole set (drain, obliterate, retry_failed,
#: clean): the operation repeats the call until done, so that no call keeps Redis busy
#: (BUSY to every other client past ~5 s) for more than a few tens of ms whatever the size.
#: Measured (bench/README, docs/reliability.md): ~3 us per deleted job on 2 cores.
SWEEP_CHUNK_JOBS = 1000
#: How long Redis remembers an add call's idempotency token (ms). It must outlast the
#: client's whole retry sequence (``connection.SOCKET_TIMEOUT`` x (``RETRIES`` + 1) plus
#: back-off and connect time, ~2 min); a re-send after that would add the jobs again.
#: Cost: one key of ~100 bytes per add call (not per job of a bulk) while it lives.
ADD_TOKEN_TTL_MS = 180_000


def now_ms() -> int:
    return int(time.time() * 1000)


def new_token() -> str:
    """A fresh idempotency token: 96 random bits (fork-safe: from the OS, not a counter)."""
    return os.urandom(12).hex()


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


@dataclass
class RateLimit:
    max: int
    duration: int

    @classmethod
    def parse(cls, value: object) -> RateLimit | None:
        if value is None:
            return None
        if isinstance(value, RateLimit):
            return value
        if not isinstance(value, Mapping) or set(value) - {"max", "duration"}:
            raise InvalidOptionError("rate_limiter must be a dict {'max': n, 'duration': ms}")
        n = value.get("max")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidOptionError(f"rate_limiter max must be an int >= 1: {n!r}")
        return cls(n, to_ms(value.get("duration", 1000), "rate_limiter duration",
                            allow_zero=False))


class QueueOps:
    """The operations of one queue, as generators of Redis calls."""

    def __init__(self, name: str, *, prefix: str = DEFAULT_PREFIX,
                 default_job_options: Mapping[str, Any] | JobOptions | None = None,
                 max_payload_bytes: int = serialization.DEFAULT_HARD_LIMIT,
                 events_maxlen: int = EVENTS_MAXLEN,
                 add_token_ttl_ms: int = ADD_TOKEN_TTL_MS) -> None:
        self.keys = QueueKeys(name, prefix)
        self.add_token_ttl_ms = add_token_ttl_ms
        self.name = self.keys.name
        self.defaults = (default_job_options if isinstance(default_job_options, JobOptions)
                         else default_options(default_job_options))
        if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int) \
                or max_payload_bytes < 1:
            raise InvalidOptionError(f"max_payload_bytes must be a positive int: "
                                     f"{max_payload_bytes!r}")
        self.max_payload_bytes = max_payload_bytes
        self.events_maxlen = events_maxlen
        # When this object last put the queue's name in the registry (keys.registry_key):
        # the SADD rides in the pipeline of an add (no extra round trip), at most once a
        # minute, so a queue obliterated elsewhere and added to again comes back.
        self.registered_at = -REGISTER_EVERY_S
        # connect(..., min_replicas=N): adds wait for N replicas (set by the Queue from its
        # Connection; the engine's own adds, dead letters, keep 0)
        self.min_replicas = 0
        self.replica_timeout_ms = 0

    # -- building blocks -------------------------------------------------------------
    def call(self, script: str, *args: Any) -> Call:
        """A call of ``script`` with the queue's key prefix and the common ARGV prologue."""
        return Call(script, self.keys.script_keys,
                    (self.keys.job_prefix, "", self.events_maxlen, *args))

    def prepare(self, data: Any, opts: Mapping[str, Any]) -> tuple[list[Any], JobRecord]:
        """Validate and encode one job (no I/O): its add.lua arguments and its record."""
        args: list[Any] = []
        options = merge_options(self.defaults, opts) if opts else self.defaults
        return args, self._prepare_into(args, data, options, now_ms())

    def _prepare_into(self, args: list[Any], data: Any, options: JobOptions,
                      ts: int) -> JobRecord:
        # The hot loop of a bulk add: appends this job's 7 add.lua arguments to ``args``.
        text = serialization.encode_data(data, self.max_payload_bytes)
        name = data.get("type")
        if type(name) is not str:
            name = data.get("name")
            if not isinstance(name, str):
                name = "default"
        if not (text.isascii() and name.isascii()):
            text, name = _utf8_safe(text, data, name)
        job_id = options.job_id
        if job_id and not job_id.isascii() and not _encodable(job_id):
            raise InvalidOptionError(f"job_id {job_id!r} is not valid UTF-8 text "
                                     "(it holds a lone surrogate)")
        delay = options.delay
        args += (job_id or "", name, text, options.to_json(), options.priority, delay,
                 options.ext_json())
        return JobRecord(job_id or "", name, dict(data), options,
                         JobState.DELAYED if delay else JobState.WAITING, ts, delay=delay)

    # -- producers ---------------------------------------------------------------------
    def add(self, data: Any, opts: Mapping[str, Any]) -> Op[JobRecord]:
        jobs = yield from self.add_bulk([(data, opts)])
        return jobs[0]

    def add_bulk(self, items: Iterable[Any]) -> Op[list[JobRecord]]:
        """Add many jobs. Items: data or (data, opts).

        One script call (one round trip) per chunk of at most :data:`BULK_CHUNK_JOBS` jobs
        and about :data:`BULK_CHUNK_BYTES` of arguments, so that no call keeps Redis busy
        for long whatever the size of the bulk; each chunk is atomic. Every call carries a
        fresh idempotency token: a call the client re-sends (socket timeout, reconnect)
        returns the jobs the first one made instead of storing them twice.
        """
        records: list[JobRecord] = []
        defaults, prepare = self.defaults, self._prepare_into
        args: list[Any] = []
        # Every job is validated and encoded before anything is sent (a bad item raises
        # with nothing written); chunk boundaries: (first arg, first record) per chunk.
        bounds = [(0, 0)]
        first_rec, size = 0, 0
        for item in items:
            if type(item) is tuple:
                data, opts = item
                options = merge_options(defaults, opts) if opts else defaults
            else:
                data, options = item, defaults
            before = len(args)
            records.append(prepare(args, data, options, 0))
            size += len(args[before + 2]) + len(args[before + 3])
            if len(records) - first_rec >= BULK_CHUNK_JOBS or size >= BULK_CHUNK_BYTES:
                first_rec, size = len(records), 0
                bounds.append((len(args), first_rec))
        bounds.append((len(args), len(records)))
        for (a0, r0), (a1, r1) in itertools.pairwise(bounds):
            if r1 > r0:
                chunk_args = args if a1 - a0 == len(args) else args[a0:a1]
                yield from self._add_chunk(chunk_args, records, r0, r1)
        return records

    def add_records(self, args: list[Any], records: list[JobRecord],
                    before: Sequence[Call] = ()) -> Op[list[JobRecord]]:
        """One add.lua call for ``records`` (their arguments ``args``, as ``prepare`` made
        them), sent after the calls ``before`` in the same round trip (the artifacts the
        jobs adopt: ``nbqueue.dataplane``). Returns the records, ids filled in."""
        yield from self._add_chunk(args, records, 0, len(records), before)
        return records

    def _add_chunk(self, args: list[Any], records: list[JobRecord], first: int,
                   end: int, before: Sequence[Call] = ()) -> Op[None]:
        """Run add.lua for ``records[first:end]`` (their arguments ``args``); fills in ids
        and the server's timestamp."""
        call = self.call("add", new_token(), self.add_token_ttl_ms, *args)
        if before:
            if self.min_replicas:  # WAIT rides behind the add, on the same connection
                replies = yield Batch([*before, call, self.wait_call()])
                reply, acked = replies[-2], int(replies[-1])
            else:
                reply, acked = (yield Batch([*before, call]))[-1], None
        else:
            reply, acked = yield from self.replicated(call)
        # "<s>" or "<s>/<label>": fresh ids are s + k and the label (scripts/includes/ids.lua)
        seq_text, _, label = str(reply[0]).partition("/")
        seq0, ts = int(seq_text), int(reply[1])
        chunk = records[first:end]
        for k, record in enumerate(chunk, 1):
            if not record.id:
                record.id = f"{seq0 + k}{label}"
            record.timestamp = ts
        if acked is not None and acked < self.min_replicas:
            self.not_replicated(acked, [r.id for r in records[:end]], len(records) - end)
        if len(reply) > 2:
            # a re-added job_id (k), or a deduplicated job (-k, then the id of the job it
            # was deduplicated against): hand back the job as it is, not as we sent it;
            # -k, '' : job k's key was held by a foreign value and the job was not added
            existing: list[tuple[int, str]] = []
            taken: list[str] = []
            rest = iter(reply[2:])
            for k in rest:
                k = int(k)
                if k > 0:
                    existing.append((first + k - 1, chunk[k - 1].id))
                else:
                    other = _text(next(rest))
                    if other:
                        existing.append((first - k - 1, other))
                    else:
                        taken.append(chunk[-k - 1].id)
            if taken:
                raise NbqueueError(
                    f"queue {self.name!r}: the key of job id(s) {', '.join(taken)} is held by "
                    "something that is not an nbqueue job (hand-made, or the id counter was "
                    "reset); those jobs were not added, the others of the call were")
            found = yield from self.get_jobs_by_id([jid for _, jid in existing])
            for (i, jid), rec in zip(existing, found):
                if rec is not None:
                    records[i] = rec
                else:  # deduplicated against a job gone since (retention, remove): its id
                    records[i].id, records[i].state = jid, JobState.UNKNOWN

    def dead_letters_of(self, records: Sequence[JobRecord], error_type: str
                        ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """:func:`dead_letter_entry` of failed jobs of this queue whose failure made no
        attempt (e.g. ``dependency_failed``): their stored reason, attempts as they are."""
        letters = []
        for rec in records:
            rec.attempts_made -= 1  # dead_letter_entry counts an attempt: none was made
            letters.append(dead_letter_entry(self.name, rec, rec.failed_reason or "",
                                             error_type))
        return letters

    def add_dead_letters(self, letters: Sequence[tuple[dict[str, Any], dict[str, Any]]]
                         ) -> Op[list[JobRecord]]:
        """Add :func:`dead_letter_entry` records (to the dead-letter queue's ops): their
        ``failed_at`` (and their id's last part) is the Redis server's clock now."""
        now = yield from self.server_time()
        items = [({**data, "payload": {**data["payload"], "failed_at": now}},
                  {**opts, "job_id": f"{opts['job_id']}:{now}"}) for data, opts in letters]
        return (yield from self.add_bulk(items))

    # -- the registry of queue names -----------------------------------------------------
    def register_call(self) -> Call:
        """Add this queue's name to the registry that scrapes and ``nbqueue stats`` read.
        Optional: an ACL user without access to the registry key still adds jobs."""
        return Call(command=("SADD", registry_key(self.keys.prefix), self.name),
                    optional=True)

    def note_registration(self, reply: Any) -> None:
        """Note a registration's reply (a refused one is logged once per object)."""
        if isinstance(reply, Exception) and self.registered_at < 0:
            _log.warning("queue %r: could not add its name to %s (%s); scrapes and "
                         "`nbqueue stats` of this Redis need the queue names given "
                         "explicitly", self.name, registry_key(self.keys.prefix), reply)
        self.registered_at = time.monotonic()

    def registering(self, call: Call) -> Op[Any]:
        """``call``'s reply; the queue's registration rides in the same pipeline when due
        (once a minute per object: no extra round trip, the direct lane otherwise)."""
        if time.monotonic() - self.registered_at < REGISTER_EVERY_S:
            return (yield call)
        reply, registered = yield Batch([call, self.register_call()])
        self.note_registration(registered)
        return reply

    def replicated(self, call: Call) -> Op[tuple[Any, int | None]]:
        """``call``'s reply and, on a ``min_replicas`` connection, how many replicas hold
        it: ``WAIT`` rides in the same pipeline, so it runs on the connection that wrote
        (None: no WAIT asked). The registration rides along when due (:meth:`registering`).
        """
        if not self.min_replicas:
            return (yield from self.registering(call)), None
        due = time.monotonic() - self.registered_at >= REGISTER_EVERY_S
        wait = self.wait_call()
        replies = yield Batch([call, self.register_call(), wait] if due else [call, wait])
        if due:
            self.note_registration(replies[1])
        return replies[0], int(replies[-1])

    def wait_call(self) -> Call:
        """``WAIT min_replicas timeout``: how many replicas hold this connection's writes."""
        return Call.cmd("WAIT", self.min_replicas, self.replica_timeout_ms)

    def not_replicated(self, acked: int, ids: Sequence[str], unsent: int = 0) -> None:
        """Raise :class:`NotReplicatedError`: ``ids`` were written, fewer replicas than
        ``min_replicas`` confirmed them."""
        shown = ", ".join(ids[:10]) + (f" ... ({len(ids)} jobs)" if len(ids) > 10 else "")
        rest = f"; the {unsent} later item(s) of the call were not sent" if unsent else ""
        raise NotReplicatedError(
            f"queue {self.name!r}: job(s) {shown} were written on the primary, but only "
            f"{acked} of the {self.min_replicas} replica(s) asked for (connect(..., "
            f"min_replicas={self.min_replicas})) confirmed them within "
            f"{self.replica_timeout_ms} ms{rest}. The jobs ARE stored and will run unless "
            "the primary fails before a replica has them; adding them again adds them "
            "twice unless they have a job_id.", queue=self.name, job_ids=list(ids),
            acked=acked, wanted=self.min_replicas)

    def ensure_registered(self) -> Op[None]:
        """One SADD unless this object registered the queue in the last minute."""
        if time.monotonic() - self.registered_at >= REGISTER_EVERY_S:
            self.note_registration((yield self.register_call()))

    # -- reading -----------------------------------------------------------------------
    def get_jobs_by_id(self, ids: Sequence[str]) -> Op[list[JobRecord | None]]:
        calls = [Call.cmd("HGETALL", self.keys.job(i)) for i in ids]
        calls.append(Call.cmd("HGET", self.keys.meta, "paused"))
        replies = yield Batch(calls)
        paused = replies[-1] == "1"
        return [parse_job(i, h, paused) for i, h in zip(ids, replies[:-1])]

    def get_job(self, job_id: str) -> Op[JobRecord | None]:
        if not isinstance(job_id, str):
            job_id = str(job_id)
        found = yield from self.get_jobs_by_id([job_id])
        return found[0]

    def get_jobs(self, states: Iterable[str] | str | None = None, start: int = 0,
                 limit: int = 100) -> Op[list[JobRecord]]:
        """Jobs in the given states: newest first for finished ones, in run order otherwise."""
        if states is None:
            states = ["active", "waiting", "delayed", "waiting-children", "failed",
                      "completed"]
        elif isinstance(states, str):
            states = [states]
        states = [str(JobState(s).value) if isinstance(s, JobState) else str(s) for s in states]
        end = start + limit - 1 if limit and limit > 0 else -1
        calls = []
        for s in states:
            key = self.keys.state_set(s)
            newest_first = s in ("completed", "failed")
            calls.append(Call.cmd("ZREVRANGE" if newest_first else "ZRANGE", key, start, end))
        id_lists = yield Batch(calls)
        ids = [i for lst in id_lists for i in lst]
        if not ids:
            return []
        found = yield from self.get_jobs_by_id(ids)
        return [r for r in found if r is not None]

    def metrics(self) -> Op[QueueMetrics]:
        k = self.keys
        r = yield Batch([Call.cmd("ZCARD", k.wait), Call.cmd("ZCARD", k.active),
                         Call.cmd("ZCARD", k.completed), Call.cmd("ZCARD", k.failed),
                         Call.cmd("ZCARD", k.delayed), Call.cmd("HGET", k.meta, "paused"),
                         Call.cmd("ZCARD", k.waiting_children)])
        waiting, active, completed, failed, delayed = (int(x) for x in r[:5])
        children = int(r[6])
        return QueueMetrics(self.name, waiting, active, completed, failed, delayed,
                            r[5] == "1", waiting + active + delayed + children, children)

    def stats(self) -> Op[dict[str, float]]:
        """Running totals (completed, failed, error:<type>, duration buckets...)."""
        raw = yield Call.cmd("HGETALL", self.keys.stats)
        return {k: float(v) for k, v in raw.items()}

    def history(self, minutes: int = 60) -> Op[list[tuple[int, int, int]]]:
        """(minute start ms, completed, failed) for the last ``minutes`` minutes, oldest first."""
        t = yield Call.cmd("TIME")
        current = (int(t[0]) * 1000 + int(t[1]) // 1000) // 60_000
        span = list(range(current - minutes + 1, current + 1))
        r = yield Batch([Call.cmd("HMGET", self.keys.minute(m), "completed", "failed")
                         for m in span])
        return [(m * 60_000, int(c or 0), int(f or 0)) for m, (c, f) in zip(span, r)]

    def server_time(self) -> Op[int]:
        """The Redis server's clock, in ms (nbqueue's one clock)."""
        t = yield Call.cmd("TIME")
        return int(t[0]) * 1000 + int(t[1]) // 1000

    def is_paused(self) -> Op[bool]:
        return (yield Call.cmd("HGET", self.keys.meta, "paused")) == "1"

    # -- control -----------------------------------------------------------------------
    def set_rate_limit(self, limit: RateLimit | None) -> Op[None]:
        yield from self.ensure_registered()
        if limit is None:
            yield Call.cmd("HDEL", self.keys.meta, "rl_max", "rl_dur")
        else:
            yield Call.cmd("HSET", self.keys.meta, "rl_max", limit.max, "rl_dur", limit.duration)

    def rate_limit(self) -> Op[RateLimit | None]:
        r = yield Call.cmd("HMGET", self.keys.meta, "rl_max", "rl_dur")
        return RateLimit(int(r[0]), int(r[1])) if r[0] and r[1] else None

    def set_paused(self, paused: bool) -> Op[None]:
        yield self.call("set_paused", "1" if paused else "0")

    def drain(self, delayed: bool = False) -> Op[int]:
        """Remove the waiting (and delayed) jobs, :data:`SWEEP_CHUNK_JOBS` per script call.

        Not atomic as a whole (each call is): jobs added while it runs may stay or go."""
        total = 0
        while True:
            removed, done = yield self.call("drain", "1" if delayed else "0",
                                            SWEEP_CHUNK_JOBS, total)
            total += int(removed)
            if int(done):
                break
        yield from sweep(self.keys)  # artifact files of the removed jobs (fsspec stores)
        return total

    def clean(self, grace_ms: int, limit: int, state: str) -> Op[int]:
        state = str(state.value if isinstance(state, JobState) else state)
        if state == "wait":
            state = "waiting"
        if state not in ("completed", "failed", "waiting", "delayed"):
            raise InvalidOptionError(
                f"clean takes state completed, failed, waiting or delayed, not {state!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionError(f"clean limit must be an int >= 0 (0 = all): {limit!r}")
        total, rank = 0, 0
        while True:
            budget = SWEEP_CHUNK_JOBS if not limit else min(SWEEP_CHUNK_JOBS, limit - total)
            removed, rank = yield self.call("clean", state, grace_ms, budget,
                                            SWEEP_CHUNK_JOBS, rank)
            total += len(removed)
            if int(rank) < 0 or (limit and total >= limit):
                break
        yield from sweep(self.keys)  # artifact files of the removed jobs (fsspec stores)
        return total

    def retry_failed(self, limit: int = 0, job_id: str = "") -> Op[int]:
        """Failed jobs (``limit`` of them, 0: all there are now; or the one ``job_id``) back
        to wait; a dependent re-armed (flows.retry: never partial). At most
        :data:`SWEEP_CHUNK_JOBS` per script call; a job that fails again while this runs is
        not moved twice: at most as many as were failed at the start."""
        from .flows import retry

        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionError(f"retry_failed limit must be an int >= 0 (0 = all): "
                                     f"{limit!r}")
        if job_id:
            return (yield from retry(self, 0, job_id))
        target = int((yield Call.cmd("ZCARD", self.keys.failed)))
        if limit:
            target = min(target, limit)
        moved = 0
        while moved < target:
            n = yield from retry(self, min(SWEEP_CHUNK_JOBS, target - moved), "")
            if n == 0:
                break
            moved += n
        return moved

    def remove(self, job_id: str) -> Op[bool]:
        r = int((yield self.call("remove", str(job_id))))
        if r > 0:
            yield from sweep(self.keys)  # its artifact files (fsspec stores)
        if r < 0:
            raise JobActiveError(f"job {job_id} is active (locked by a worker) and cannot be "
                               "removed now; remove it once it has finished")
        if r == 2:  # jobs depended on it: deliver their "gone" notifications now
            from .flows import resolve

            yield from resolve(self)
        return r >= 1

    def obliterate(self, force: bool = False) -> Op[int]:
        r = 0
        while True:  # SWEEP_CHUNK_JOBS per script call; the first call pauses the queue
            n, done = yield self.call("obliterate", "1" if force else "0", SWEEP_CHUNK_JOBS)
            if int(n) < 0:
                raise QueueBusyError(f"queue {self.name!r} has active jobs; stop its workers "
                                     "or pass force=True" + (
                                         f" ({r} jobs were deleted before a job became "
                                         "active; the queue is paused)" if r else ""))
            r += int(n)
            if int(done):
                break
        yield from sweep(self.keys)  # artifact files of the deleted jobs (fsspec stores)
        # Out of the registry too (another slot on a cluster, hence a second call). A
        # process still adding to this queue registers it again within a minute.
        yield Call(command=("SREM", registry_key(self.keys.prefix), self.name), optional=True)
        self.registered_at = -REGISTER_EVERY_S
        return r

    # -- job control (BullMQ parity) ----------------------------------------------------
    def promote(self, job_id: str) -> Op[None]:
        """A delayed job joins its priority level now; anything else is an error."""
        r = yield self.call("promote", _job_id(job_id))
        self._check_control(r, job_id, "promote", "it is not delayed")

    def change_priority(self, job_id: str, priority: Any, lifo: bool = False) -> Op[str]:
        """New priority of a waiting or delayed job; returns its state."""
        prio = parse_priority(priority)
        if not isinstance(lifo, bool):
            raise InvalidOptionError(f"lifo must be a bool: {lifo!r}")
        r = yield self.call("change_priority", _job_id(job_id), prio, "1" if lifo else "0")
        return self._check_control(r, job_id, "change the priority of",
                                   "only waiting and delayed jobs can be re-prioritised")

    def update_data(self, job_id: str, data: Any) -> Op[str]:
        """Replace the data of a job that has not finished; returns its state."""
        text = serialization.encode_data(data, self.max_payload_bytes)
        if not text.isascii() and not _encodable(text):
            text, _ = _utf8_safe(text, data, "")
        r = yield self.call("update_data", _job_id(job_id), text)
        return self._check_control(r, job_id, "update the data of",
                                   "its data is final once it has finished")

    def _check_control(self, reply: Any, job_id: str, action: str, why: str) -> str:
        code = int(reply[0])
        if code == 0:
            raise JobNotFoundError(f"job {job_id} not found in queue {self.name!r}")
        if code < 0:
            raise JobStateError(f"cannot {action} job {job_id} of queue {self.name!r}: it is "
                                f"{_text(reply[1])} ({why})")
        return _text(reply[1])

    def get_deduplication_job_id(self, dedup_id: str) -> Op[str | None]:
        """The id of the job that deduplication id ``dedup_id`` currently points to."""
        if not isinstance(dedup_id, str):
            raise InvalidOptionError(
                f"deduplication id must be a str, not {type(dedup_id).__name__}")
        key = self.keys.dedup(dedup_id)
        cur, pttl = yield Batch([Call.cmd("GET", key), Call.cmd("PTTL", key)])
        if cur is None:
            return None
        if int(pttl) == -1:  # "until the job finishes": a drained or finished job holds nothing
            state = yield Call.cmd("HGET", self.keys.job(cur), "state")
            if state is None or state in ("completed", "failed"):
                return None
        return str(cur)

    def set_global_concurrency(self, limit: int | None) -> Op[None]:
        if limit is None:
            yield Call.cmd("HDEL", self.keys.meta, "gc")
        else:
            yield Call.cmd("HSET", self.keys.meta, "gc", validate_global_concurrency(limit))

    def global_concurrency(self) -> Op[int | None]:
        r = yield Call.cmd("HGET", self.keys.meta, "gc")
        return int(r) if r else None

    # -- worker registry ---------------------------------------------------------------
    def heartbeat(self, worker_id: str, ttl_ms: int, info: Mapping[str, Any],
                  active: int) -> Op[None]:
        """Register or renew a worker (one call per worker per heartbeat interval)."""
        # the queue's name rides along (registry of queue names): scrapes see its workers
        yield from self.registering(self.call(
            "heartbeat", worker_id, ttl_ms, json.dumps(dict(info), separators=(",", ":")),
            active, "0"))

    def deregister(self, worker_id: str) -> Op[None]:
        yield self.call("heartbeat", worker_id, 1, "{}", 0, "1")

    def get_workers(self) -> Op[list[WorkerInfo]]:
        """The workers of this queue that heartbeated within their ttl, oldest first."""
        t, members = yield Batch([Call.cmd("TIME"),
                                  Call.cmd("ZRANGE", self.keys.workers, 0, -1, "WITHSCORES")])
        now = int(t[0]) * 1000 + int(t[1]) // 1000
        ids = [_text(m) for m, score in _pairs(members) if float(score) >= now]
        if not ids:
            return []
        hashes = yield Batch([Call.cmd("HGETALL", self.keys.worker(i)) for i in ids])
        out = [info for info in (parse_worker(i, h) for i, h in zip(ids, hashes)) if info]
        return sorted(out, key=lambda w: (w.started_at, w.id))

    def update_progress(self, job_id: str, progress: Any) -> Op[bool]:
        text = _wire_text(serialization.dumps(progress, "progress"))
        return bool((yield self.call("progress", job_id, text)))

    # -- logs and cancel ----------------------------------------------------------------
    def append_logs(self, lines: Mapping[str, Sequence[str]],
                    cap: int = LOG_CAP_LINES) -> Op[int]:
        """Append lines to jobs' logs in one call (the newest ``cap`` lines of each are
        kept; lines of jobs that no longer exist are dropped). Returns jobs written."""
        args: list[Any] = [cap]
        for job_id, job_lines in lines.items():
            args += [str(job_id), len(job_lines), *(_log_line(x) for x in job_lines)]
        if len(args) == 1:
            return 0
        return int((yield self.call("logs", *args)))

    def get_logs(self, job_id: str, start: int = 0, end: int = -1) -> Op[list[str]]:
        """The job's log lines (oldest first); [] for a job with no log (or none at all)."""
        return list((yield Call.cmd("LRANGE", self.keys.logs(str(job_id)), start, end)))

    def cancel(self, job_id: str, reason: str = "cancelled") -> Op[bool]:
        """Cancel a job (cancel.lua). True: a waiting/delayed job failed at once, or an
        active one's worker was told to stop it. False: the job had finished already (a
        documented no-op). Unknown ids raise ``JobNotFoundError``."""
        code, state = (yield self.call("cancel", str(job_id), _wire_text(str(reason))))
        code = int(code)
        if code == 0:
            raise JobNotFoundError(f"job {job_id} not found in queue {self.name!r}")
        if code == -2:
            raise JobStateError(f"job {job_id} of {self.name!r} is in state {state!r}, "
                               "which cancel does not handle")
        if code == 3:  # jobs depended on it: deliver their notifications now
            from .flows import resolve

            yield from resolve(self)
        return code > 0

    # -- events and results -----------------------------------------------------------
    def last_event_id(self) -> Op[str]:
        r = yield Call.cmd("XREVRANGE", self.keys.events, "+", "-", "COUNT", 1)
        return r[0][0] if r else "0-0"

    def read_events(self, last_id: str, block_ms: int | None = None,
                    count: int = 500) -> Op[tuple[str, list[Event]]]:
        """Events after ``last_id`` (waiting up to ``block_ms``); returns the new last id."""
        cmd: list[Any] = ["XREAD", "COUNT", count]
        if block_ms is not None:
            cmd += ["BLOCK", max(1, block_ms)]
        r = yield Call.cmd(*cmd, "STREAMS", self.keys.events, last_id)
        if not r:
            return last_id, []
        entries = r[0][1] if isinstance(r, list) else next(iter(r.values()))[0]
        if not entries:
            return last_id, []
        return entries[-1][0], parse_events(entries)

    def wait_result(self, job_id: str, timeout: float | None) -> Op[Any]:
        """The job's return value once it has finished (raises JobFailedError if failed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = WorkerWatch()  # no live worker on this queue: say so (nbqueue/liveness.py)
        # Read the stream position before the job: a finish after it shows up as an event.
        last = yield from self.last_event_id()
        while True:
            h = yield Call.cmd("HMGET", self.keys.job(job_id), "state", "rv", "fr", "et", "data",
                               "st")
            if h[4] is None:
                raise JobNotFoundError(f"job {job_id} not found in queue {self.name!r}")
            if h[0] == "completed":
                return serialization.loads(h[1])
            if h[0] == "failed":
                traces = parse_traces(h[5])
                raise JobFailedError(job_id, h[2], h[3], traces[-1] if traces else None)
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    why = yield from watch.note([self], "it keeps running: wait again, or "
                                                "cancel()")
                    raise ResultTimeoutError(f"job {job_id} did not finish within {timeout} s; "
                                             f"{why}")
                yield from watch.step([self])
                block = 1000 if left is None else max(1, int(min(left, 1.0) * 1000))
                last, events = yield from self.read_events(last, block)
                if not events:
                    # Re-check now and then: the events stream is capped and may have
                    # rolled past our entry under heavy load.
                    break
                if any(e.job_id == job_id and e.event in ("completed", "failed", "removed",
                                                          "cancelled")
                       for e in events):
                    break

    # -- worker side -------------------------------------------------------------------
    def fetch(self, want: int, token: str, lock_ms: int, unpark: bool = False) -> Op[Fetched]:
        return _parse_fetch_safe((yield self.call("fetch", want, token, lock_ms, 0,
                                                  int(unpark))))

    def handoff_key(self, token: str) -> str:
        return self.keys.handoff(token)

    def block_and_fetch(self, wake_key: str, secs: float, want: int, token: str,
                        lock_ms: int) -> Op[tuple[Fetched, bool]]:
        """Fetch, and if there was nothing, park: wait (BLPOP) for a job handed over by a
        producer (add.lua), a marker (other new work), ``wake_key`` or the timeout. One
        pipeline; returns what was fetched or handed over, and whether the worker may still
        be registered as idle (then its next fetch or finish must unpark)."""
        hkey = self.handoff_key(token)
        replies = yield Batch([
            self.call("fetch", want, token, lock_ms, max(1, round(secs * 1000)), 0),
            Call.cmd("BLPOP", hkey, self.keys.marker, wake_key, round(secs, 3))])
        fetched = _parse_fetch_safe(replies[0])
        popped = replies[1]
        if popped and popped[0] == hkey and popped[1] != "0":
            # a job handed over: its fields as in a fetch reply (add.lua)
            try:
                fields = json.loads(popped[1])
            except ValueError:
                fields = []
            handed = _parse_fetch_safe([-1, 0, *fields])
            fetched.jobs.extend(handed.jobs)
            fetched.corrupt.extend(handed.corrupt)
            return fetched, False
        return fetched, True

    def finish(self, outcomes: Sequence[Outcome], stats: Mapping[str, float], want: int,
               token: str, lock_ms: int,
               unpark: bool = False) -> Op[tuple[list[bool], Fetched]]:
        args: list[Any] = [want, token, lock_ms, int(unpark), len(stats)]
        for field, inc in stats.items():
            args += [field, inc]
        for o in outcomes:
            keep = (o.job.opts.remove_on_complete if o.kind is OutcomeKind.COMPLETED
                    else o.job.opts.remove_on_fail)
            atm = o.job.attempts_made + 1 if o.attempts_made is None else o.attempts_made
            value, error_type = o.value, o.error_type  # ASCII (most): no call per job
            args += [o.job.id, o.job.lock or "", o.kind._value_,
                     value if value.isascii() else _wire_text(value),
                     error_type if error_type.isascii() else _wire_text(error_type),
                     o.retry_delay, atm, keep.count, keep.age_ms,
                     _wire_text(o.stacktrace) if o.stacktrace else ""]
        reply = yield self.call("finish", *args)
        n = len(outcomes)
        fetched = _parse_fetch_safe(reply[n:])
        # status 2: done, and jobs that depend on it were notified (a resolver should run)
        fetched.notify = 2 in reply[:n]
        return [bool(x) for x in reply[:n]], fetched

    def extend_locks(self, locks: Mapping[str, str], lock_ms: int) -> Op[list[str]]:
        args: list[Any] = [lock_ms]
        for job_id, lock in locks.items():
            args += [job_id, lock]
        return list((yield self.call("extend_locks", *args)))

    def check_stalled(self, max_stalled: int, interval_ms: int) -> Op[tuple[list[str],
                                                                               list[str]]]:
        back, failed = yield self.call("stalled", max_stalled, interval_ms)
        return list(back), list(failed)


def validate_global_concurrency(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidOptionError(f"global_concurrency must be an int >= 1 (or None for no "
                                 f"limit): {limit!r}")
    return limit


def _job_id(job_id: object) -> str:
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        return str(job_id)
    if not isinstance(job_id, str) or not job_id:
        raise InvalidOptionError(f"job id must be a non-empty str: {job_id!r}")
    return job_id


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(members: Any) -> list[tuple[Any, Any]]:
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

def _log_line(line: Any) -> str:
    text = line if isinstance(line, str) else str(line)
    if len(text) > LOG_LINE_CHARS:
        text = f"[{len(text) - LOG_LINE_CHARS} chars cut] " + text[-LOG_LINE_CHARS:]
    return _wire_text(text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _wire_text(text: str) -> str:
    """``text`` made sendable as UTF-8: lone surrogates become ``\\uXXXX`` escapes.

    In JSON text they can only occur inside strings, where that escape is exact; in a
    failure reason it is a readable stand-in. Without this a processor returning (or an
    error message holding) such a str made the worker's finish call raise
    UnicodeEncodeError, which killed the worker.
    """
    if text.isascii() or _encodable(text):
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _parse_fetch_safe(reply: list[Any]) -> Fetched:
    """``parse_fetch``, but a job whose stored fields break the parser in an unexpected way
    (e.g. ``opts`` = ``{"roc": 5}``) becomes a corrupt job the worker fails, instead of an
    exception that kills the worker and strands every job locked by the same fetch."""
    try:
        return parse_fetch(reply)
    except Exception:
        pass
    head = list(reply[:2])
    fetched = Fetched([], [], int(reply[0]), int(reply[1]))
    for i in range(2, len(reply), FETCH_STRIDE):
        part = reply[i:i + FETCH_STRIDE]
        try:
            one = parse_fetch(head + list(part))
        except Exception as exc:
            fetched.corrupt.append(CorruptJob(str(part[0]), str(part[1]),
                                              f"corrupt job hash: {type(exc).__name__}: {exc}"))
            continue
        fetched.jobs.extend(one.jobs)
        fetched.corrupt.extend(one.corrupt)
    return fetched


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_safe(text: str, data: Any, name: str) -> tuple[str, str]:
    """Lone surrogates cannot be sent to Redis as UTF-8: JSON-escape them (``\\ud800``),
    which round-trips exactly, instead of failing deep in the client with UnicodeEncodeError."""
    if not _encodable(text):
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    if not _encodable(name):
        name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return text, name


def dead_letter_entry(origin: str, record: JobRecord, reason: str,
                      error_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data and options of the dead-letter job recording a terminal failure; sent by
    :meth:`QueueOps.add_dead_letters`, which stamps ``failed_at`` with the server's clock."""
    data = {"type": "dead_letter", "payload": {
        "queue": origin, "job_id": record.id, "name": record.name, "data": record.data,
        "reason": reason, "error_type": error_type,
        "attempts_made": record.attempts_made + 1}}
    return data, {"job_id": f"{origin}:{record.id}:{record.attempts_made + 1}"}
