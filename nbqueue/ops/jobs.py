"""The operations of producers and readers: add, read, control, cancel, results.

See ``nbqueue.ops`` (the package) for the map of the operations.
"""

from __future__ import annotations

import collections
import itertools
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .. import follow, otel, serialization
from ..artifacts import ArtifactRef
from ..dataplane import resolve_many
from ..errors import (
    ArtifactError,
    InvalidOptionError,
    NbqueueError,
)
from ..options import (
    JobOptions,
    merge_options,
)
from ..protocol import Batch, Call, Op
from ..records import (
    END_FIELDS,
    Event,
    JobEnd,
    JobRecord,
    dead_letter_entry,
    parse_events,
    parse_job,
    parse_job_end,
    reply_text,
    stream_entries,
)
from ..serialization import encodable, log_line, utf8_safe, wire_text
from ..types import JobState, QueueMetrics
from .base import ACKS, MAX_ACKS_PER_ADD, OpsBase

LOG_CAP_LINES = 1000  # lines kept per job log (the newest)
#: Jobs per add.lua call: a bulk add is sent in chunks so that no single script call keeps
#: Redis busy (every other client waits meanwhile) for more than a few tens of ms.
BULK_CHUNK_JOBS = 1000
#: ... and about this many bytes of job data and options per call.
BULK_CHUNK_BYTES = 1_000_000


def now_ms() -> int:
    return int(time.time() * 1000)


def new_token() -> str:
    """A fresh idempotency token: 96 random bits (fork-safe: from the OS, not a counter)."""
    return os.urandom(12).hex()


class JobOps(OpsBase):
    """Adding jobs, reading them and the queue, controlling both, and waiting for ends."""

    def sibling(self, name: str) -> JobOps:
        """The ops of queue ``name`` beside this one (same key prefix): dependencies and
        dead letters cross queues (``nbqueue.flows``)."""
        siblings: dict[str, JobOps] | None = self.__dict__.get("_siblings")
        if siblings is None:
            siblings = self.__dict__["_siblings"] = {self.name: self}
        found = siblings.get(name)
        if found is None:
            found = siblings[name] = type(self)(name, prefix=self.keys.prefix)
        return found

    def prepare(self, data: Any, opts: Mapping[str, Any]) -> tuple[list[Any], JobRecord]:
        """Validate and encode one job (no I/O): its add.lua arguments and its record."""
        args: list[Any] = []
        options = merge_options(self.defaults, opts) if opts else self.defaults
        return args, self._prepare_into(args, data, options, now_ms())

    def _prepare_into(self, args: list[Any], data: Any, options: JobOptions,
                      ts: int) -> JobRecord:
        # The hot loop of a bulk add: appends this job's 7 add.lua arguments to ``args``.
        if otel.ENABLED:
            options = otel.traced(options)  # the add's trace context rides with the job
        text = serialization.encode_data(data, self.max_payload_bytes)
        name = data.get("type")
        if type(name) is not str:
            name = data.get("name")
            if not isinstance(name, str):
                name = "default"
        if not (text.isascii() and name.isascii()):
            text, name = utf8_safe(text, data, name)
        job_id = options.job_id
        if job_id and not job_id.isascii() and not encodable(job_id):
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
        # a bulk's items usually share one options dict (add_bulk(items, **opts), map):
        # merged once, its JSON made once
        last_opts: Any = None
        merged = defaults
        for item in items:
            if type(item) is tuple:
                data, opts = item
                if opts is not last_opts:
                    merged = merge_options(defaults, opts) if opts else defaults
                    last_opts = opts
                options = merged
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
        token = new_token()
        acks = ACKS.setdefault(self.keys.base, collections.deque())
        received = [acks.popleft() for _ in range(min(len(acks), MAX_ACKS_PER_ADD))]
        call = self.call("add", " ".join([token, *received]) if received else token,
                         self.add_token_ttl_ms, *args)
        if before:
            if self.min_replicas:  # WAIT rides behind the add, on the same connection
                replies = yield Batch([*before, call, self.wait_call()])
                reply, acked = replies[-2], int(replies[-1])
            else:
                reply, acked = (yield Batch([*before, call]))[-1], None
        else:
            reply, acked = yield from self.replicated(call)
        if token:  # its reply is here: the next add deletes it (bounded token memory)
            acks.append(token)
        # "<s>" or "<s>/<label>": fresh ids are s + k and the label (scripts/includes/ids.lua)
        seq_text, _, label = str(reply[0]).partition("/")
        # reply[2]: the id of the call's first event (add.lua): a waiter reads from there
        seq0, ts, since = int(seq_text), int(reply[1]), reply_text(reply[2]) or None
        chunk = records[first:end]
        for k, record in enumerate(chunk, 1):
            if not record.id:
                record.id = f"{seq0 + k}{label}"
            record.timestamp = ts
            record.since = since
        if acked is not None and acked < self.min_replicas:
            self.not_replicated(acked, [r.id for r in records[:end]], len(records) - end)
        if len(reply) > 3:
            # a re-added job_id (k), or a deduplicated job (-k, then the id of the job it
            # was deduplicated against): hand back the job as it is, not as we sent it;
            # -k, '' : job k's key was held by a foreign value and the job was not added
            existing: list[tuple[int, str]] = []
            taken: list[str] = []
            rest = iter(reply[3:])
            for k in rest:
                k = int(k)
                if k > 0:
                    existing.append((first + k - 1, chunk[k - 1].id))
                else:
                    other = reply_text(next(rest))
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

    def update_progress(self, job_id: str, progress: Any) -> Op[bool]:
        text = wire_text(serialization.dumps(progress, "progress"))
        return bool((yield self.call("progress", job_id, text)))

    # -- logs and cancel ----------------------------------------------------------------
    def append_logs(self, lines: Mapping[str, Sequence[str]],
                    cap: int = LOG_CAP_LINES) -> Op[int]:
        """Append lines to jobs' logs in one call (the newest ``cap`` lines of each are
        kept; lines of jobs that no longer exist are dropped). Returns jobs written."""
        args: list[Any] = [cap]
        for job_id, job_lines in lines.items():
            args += [str(job_id), len(job_lines), *(log_line(x) for x in job_lines)]
        if len(args) == 1:
            return 0
        return int((yield self.call("logs", *args)))

    def get_logs(self, job_id: str, start: int = 0, end: int = -1) -> Op[list[str]]:
        """The job's log lines (oldest first); [] for a job with no log (or none at all)."""
        return list((yield Call.cmd("LRANGE", self.keys.logs(str(job_id)), start, end)))

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
        entries = stream_entries(r)
        if not entries:
            return last_id, []
        return entries[-1][0], parse_events(entries)

    def outcomes(self, ids: Sequence[str], defer: bool = False) -> Op[list[JobEnd]]:
        """How each job ended (completed: its value; failed or gone: the error
        ``result()`` raises) or that it has not yet: one pipelined round trip (and one
        more for the artifacts of frame/array results, read and hash-checked). What
        ``wait_result`` and ``JobBatch`` read (several queues at once: ``protocol.together``).
        ``defer``: DataFrame results stay ``arrowcodec.FrameTable`` (``JobBatch`` only)."""
        calls = [Call.cmd("HMGET", self.keys.job(i), *END_FIELDS) for i in ids]
        replies = [(yield calls[0])] if len(calls) == 1 else (yield Batch(calls))
        ends = [parse_job_end(self.name, i, r) for i, r in zip(ids, replies)]
        # frame/Series/array results: their artifacts, read (one round trip) and checked
        arts = [k for k, e in enumerate(ends)
                if e.state == "completed" and ArtifactRef.parse(e.value) is not None]
        if arts:
            values = yield from resolve_many(self.keys, [(ids[k], ends[k].value)
                                                         for k in arts], True, defer)
            for k, v in zip(arts, values):
                ends[k] = (JobEnd("failed", error=v) if isinstance(v, ArtifactError)
                           else JobEnd("completed", v))
        return ends

    def wait_result(self, job_id: str, timeout: float | None,
                    since: str | None = None) -> Op[Any]:
        """The job's return value once it has finished (raises JobFailedError if failed,
        ``ResultTimeoutError`` after ``timeout``). ``since``: ``JobRecord.since`` (where its
        add was in the event stream), which spares a first look; see ``follow.wait_one``."""
        return (yield from follow.wait_one(self, job_id, timeout, since))
