"""Following a queue's event stream to learn which jobs ended (sans-I/O, see ``protocol``).

What ``Job.result()`` and ``JobBatch`` wait with. One step is one round trip: a blocking
``XREAD`` from the last id seen, and in the same write an ``XRANGE - + COUNT 1`` that tells
whether the stream (capped at ``events_maxlen`` entries) was trimmed past that id while
nobody read it. Only then, or when a ``drain`` removed waiting jobs without per-job events,
must a waiter look at its unfinished jobs one by one (``StreamStep.lost``); otherwise every
end is in the stream.

The ``completed`` entry a worker's finish writes carries the return values of small results
(field ``rv``, see ``scripts/finish.lua``), so a waiter reads no job hash for them: a
completed job whose value is not in its entry, and every failed job, is read once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .artifacts import ArtifactRef
from .errors import JobNotFoundError, ResultTimeoutError
from .liveness import WorkerWatch
from .protocol import Batch, Call, Op, Pause, together
from .records import Event, JobEnd, parse_events, stream_entries

if TYPE_CHECKING:
    from .ops import QueueOps
    from .ops.jobs import JobOps

READ_CHUNK = 1000  # job hashes read per round trip
MULTI_QUEUE_SWEEP_S = 0.5  # re-read unfinished jobs of the queues not followed this often
STEP_PAUSE_S = 0.02  # longest pause between reads while jobs are ending (one per ms left)
RECHECK_S = 5.0  # Job.result(): look at the job itself after this long without its end

#: Events that end a job for a waiter (``failed`` of a job retried later is re-checked).
END_EVENTS = frozenset(("completed", "failed", "removed", "cancelled"))


def stream_id(text: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``: stream ids compare as such pairs."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def earliest(ids: Iterable[str]) -> str:
    return min(ids, key=stream_id)


@dataclass
class StreamStep:
    """What one step read: the new last id, the events, whether some may be lost, and the
    return values carried by ``completed`` entries (job id -> value)."""

    last: str
    events: list[Event]
    lost: bool
    values: dict[str, Any] = field(default_factory=dict)


def read_step(events_key: str, last: str, block_ms: int, count: int) -> Op[StreamStep]:
    """One round trip: the events after ``last`` (blocking up to ``block_ms`` when there
    are none yet), then the stream's first entry, to see whether it was trimmed past
    ``last`` (trimming only ever drops the oldest entries: if the first entry still is at
    or before ``last`` after the read, the read missed nothing)."""
    read, first = yield Batch([
        Call.cmd("XREAD", "COUNT", count, "BLOCK", max(1, block_ms), "STREAMS", events_key,
                 last),
        Call.cmd("XRANGE", events_key, "-", "+", "COUNT", 1)])
    entries = stream_entries(read)
    # "0-0": the stream had no entry when the wait began; it could have lost some only by
    # growing past its cap within one step. No stream now: deleted (obliterate).
    lost = (stream_id(first[0][0]) > stream_id(last) and last != "0-0") if first \
        else last != "0-0"
    events = parse_events(entries) if entries else []
    step = StreamStep(entries[-1][0] if entries else last, events, lost)
    parsed: set[str] = set()
    for e in events:
        if (e.event == "drained" and e.fields.get("removed", "0") != "0") or (
                e.event == "cleaned" and e.fields.get("count", "0") != "0"
                and e.fields.get("state") not in ("completed", "failed")):
            step.lost = True  # unfinished jobs removed in bulk: no per-job event says so
        elif e.event == "completed" and "rv" in e.fields and e.id not in parsed:
            parsed.add(e.id)
            try:
                values = json.loads(e.fields["rv"])
            except ValueError:
                continue
            if isinstance(values, dict):
                step.values.update(values)
    return step


Key = tuple[str, str]  # (queue name, job id)


def read_ends(queues: Mapping[str, QueueOps], keys: Sequence[Key]) -> Op[list[JobEnd]]:
    """How each (queue, job id) ended, or that it has not: ``QueueOps.outcomes`` of every
    queue involved, in one round trip; in the order of ``keys``. For ``JobBatch``: frame
    results stay ``arrowcodec.FrameTable`` (``JobBatch.results`` converts them,
    ``results_frame`` joins them first)."""
    by_queue: dict[str, list[str]] = {}
    for name, job_id in keys:
        by_queue.setdefault(name, []).append(job_id)
    names = list(by_queue)
    found = yield from together([queues[n].outcomes(by_queue[n], True) for n in names])
    ends = {(n, i): e for n, part in zip(names, found) for i, e in zip(by_queue[n], part)}
    return [ends[k] for k in keys]


@dataclass
class Tracker:
    """What a ``JobBatch`` knows about its jobs' ends, advanced one step (one op) at a
    time (``JobBatch.wait``/``results``/``as_completed``)."""

    queues: dict[str, QueueOps]  # name -> the queue's ops
    ids: dict[str, list[str]]  # queue name -> job ids
    final: dict[Key, str]  # (queue, id) -> completed | failed | missing
    # where to start reading the first queue's events when every job of it was added by
    # this process (JobRecord.since): then no first look at each job is needed
    since: str | None = None
    last_event: str | None = None
    swept_at: float = 0.0
    _wanted_cache: tuple[str, set[str]] | None = None
    # how each finished job ended, read as soon as it was seen finished (retention may trim
    # a finished job later: a queue keeps its newest completed jobs, not a batch's)
    ends: dict[Key, JobEnd] = field(default_factory=dict)
    busy: bool = False  # the last step found news: let more pile up before the next read

    def __post_init__(self) -> None:
        self.total = sum(len(v) for v in self.ids.values())
        self.left = {name: len(ids) for name, ids in self.ids.items()}  # not ended, per queue
        known = {(name, i) for name, ids in self.ids.items() for i in ids}
        for key in [k for k in self.final if k not in known]:  # (a batch made smaller)
            del self.final[key]
        for name, _ in self.final:
            self.left[name] -= 1
        self.bad = sum(1 for s in self.final.values() if s != "completed")  # failed, missing

    @property
    def pending(self) -> int:
        return self.total - len(self.final)

    def pending_ops(self) -> list[QueueOps]:
        """The queues that hold jobs not finished yet."""
        return [self.queues[n] for n, left in self.left.items() if left > 0]

    def _end(self, key: Key, out: JobEnd) -> None:
        """``key`` has ended as ``out`` says (counts kept as it goes: a step costs the same
        whatever the size of the batch)."""
        self.forget((key,))
        self.final[key] = out.state
        self.ends[key] = out
        self.bad += out.state != "completed"
        self.left[key[0]] -= 1

    def forget(self, keys: Iterable[Key]) -> None:
        """These jobs run again (retried): not ended any more."""
        for key in keys:
            state = self.final.pop(key, None)
            self.ends.pop(key, None)
            if state is not None:
                self.bad -= state != "completed"
                self.left[key[0]] += 1

    def _sweep(self, others_only: bool = False) -> Op[list[Key]]:
        """Read the state of every unfinished job (pipelined, READ_CHUNK per trip);
        ``others_only``: of the queues whose events are not followed."""
        followed = next(iter(self.queues))
        newly: list[Key] = []
        todo = [(name, i) for name, ids in self.ids.items() for i in ids
                if (name, i) not in self.final and not (others_only and name == followed)]
        for c in range(0, len(todo), READ_CHUNK):
            newly += yield from self._read(todo[c:c + READ_CHUNK])
        self.swept_at = time.monotonic()
        return newly

    def _read(self, keys: Sequence[Key]) -> Op[list[Key]]:
        """Read how ``keys`` ended (one round trip); those that have."""
        outs = yield from read_ends(self.queues, keys)
        ended = []
        for key, out in zip(keys, outs):
            if out.ended:
                self._end(key, out)
                ended.append(key)
            else:  # an event said it ended, but it was retried meanwhile
                self.forget((key,))
        return ended

    def step(self, block_s: float) -> Op[list[Key]]:
        """One step: the jobs found finished since the last one (waits up to ``block_s``
        for news when there is none yet).

        The first queue's events are followed (``follow.read_step``): a job is read only
        when its end event does not carry its value (failed, a large or artifact result);
        every unfinished job is read only at the start when the batch was not added by
        this process, and when the stream may have lost events (trimmed past the last id
        seen, or jobs removed in bulk). Jobs of other queues are read every
        ``MULTI_QUEUE_SWEEP_S``."""
        name, first = next(iter(self.queues.items()))
        newly: list[Key] = []
        if self.busy and self.pending > 1:
            # jobs are ending: read them in groups (one read per job would cost the notebook
            # a round trip each, and the GIL an in-kernel worker needs)
            yield Pause(min(STEP_PAUSE_S, 0.001 * self.pending))
        if self.last_event is None:
            if self.since is not None:
                self.last_event = self.since
            else:
                # the stream position before the first sweep: no end can fall between them
                self.last_event = yield from first.last_event_id()
                newly = yield from self._sweep()
                if newly or not self.pending:
                    return newly
        step = yield from read_step(first.keys.events, self.last_event,
                                           max(1, int(block_s * 1000)), 10_000)
        self.last_event = step.last
        self.busy = bool(step.events)
        wanted = self._wanted(name)
        todo: dict[Key, bool] = {}  # key -> its value came with its completed event
        for e in step.events:
            if e.event in END_EVENTS and e.job_id in wanted \
                    and (name, e.job_id) not in self.final:
                todo[(name, e.job_id)] = e.event == "completed" and e.job_id in step.values
        keys = []
        for key, carried in todo.items():
            value = step.values.get(key[1]) if carried else None
            if carried and ArtifactRef.parse(value) is None:
                self._end(key, JobEnd("completed", value))
                newly.append(key)
            else:  # failed, large, or an artifact (read and checked with the job)
                keys.append(key)
        for c in range(0, len(keys), READ_CHUNK):
            newly += yield from self._read(keys[c:c + READ_CHUNK])
        if step.lost and self.pending:
            newly += yield from self._sweep()
        elif len(self.queues) > 1 and self.pending \
                and time.monotonic() - self.swept_at >= MULTI_QUEUE_SWEEP_S:
            newly += yield from self._sweep(others_only=True)
        return newly

    def _wanted(self, name: str) -> set[str]:
        cache = self._wanted_cache
        if cache is None or cache[0] != name:
            cache = self._wanted_cache = (name, set(self.ids.get(name, ())))
        return cache[1]


def wait_one(ops: JobOps, job_id: str, timeout: float | None,
             since: str | None = None) -> Op[Any]:
    """``Job.result()``: the job's return value once it has finished.

    ``since``: a stream id at or before every event of the job (``JobRecord.since``,
    known when this process added it): the wait starts reading there, without a first
    look at the job. Otherwise the stream's end is read, then the job. Each step is
    then one blocking read of the stream (:func:`read_step`); the job itself is read
    (``QueueOps.outcomes``) only when its end event does not carry its value (a failure,
    a large or artifact result), when the stream may have lost events, or every
    ``RECHECK_S`` without news (a cheap guard: one job)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    watch = WorkerWatch()  # no live worker on this queue: say so (nbqueue/liveness.py)
    last = since
    look = last is None
    if last is None:
        # the stream position before the look at the job: a finish after it is an event
        last = yield from ops.last_event_id()
    looked = time.monotonic()
    while True:
        if look:
            looked, look = time.monotonic(), False
            end = (yield from ops.outcomes([job_id]))[0]
            if end.state == "completed":
                return end.value
            if end.state == "missing":
                raise JobNotFoundError(f"job {job_id} not found in queue {ops.name!r}")
            if end.error is not None:
                raise end.error
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            why = yield from watch.note([ops], "it keeps running: wait again, or cancel()")
            raise ResultTimeoutError(f"job {job_id} did not finish within {timeout} s; "
                                     f"{why}")
        yield from watch.step([ops])
        block = 1000 if left is None else max(1, int(min(left, 1.0) * 1000))
        step = yield from read_step(ops.keys.events, last, block, 500)
        last = step.last
        ended = [e.event for e in step.events
                 if e.job_id == job_id and e.event in END_EVENTS]
        if ended and ended[-1] == "completed" and job_id in step.values \
                and ArtifactRef.parse(step.values[job_id]) is None:
            return step.values[job_id]
        look = bool(ended) or step.lost or time.monotonic() - looked >= RECHECK_S
