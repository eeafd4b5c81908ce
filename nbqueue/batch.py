"""``JobBatch``: the jobs of one bulk add or ``Queue.map``, waited on and gathered together.

A ``JobBatch`` is a ``list`` of ``Job`` handles (so code written for ``add_bulk``'s list
keeps working) with batch methods: ``wait`` (with a live progress display), ``results``
(in input order), ``as_completed``, ``results_frame``, ``failed``, ``retry_failed`` and
``cancel``. ``nbqueue.aio.JobBatch`` has the same methods, awaitable.

Waiting is cheap for any size: the batch follows its queue's event stream (one blocking
``XREAD`` per step, whatever the number of jobs) and reads job states in pipelined chunks
only at the start and every few seconds (the stream is capped and may roll past an entry
under heavy load, and events of other queues are not followed), never one round trip per
job per poll.
"""

from __future__ import annotations

import contextlib
import html
import json
import sys
import time
import warnings
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from .artifacts import ArtifactRef
from .dataplane import chunk_ref, load_chunk, resolve_many, user_stacklevel
from .errors import (
    ArtifactError,
    InvalidOptionError,
    JobFailedError,
    JobNotFoundError,
    ResultTimeoutError,
)
from .flows import after_retry
from .liveness import WorkerWatch
from .protocol import Batch, Call, Op
from .records import parse_traces

if TYPE_CHECKING:
    import pandas as pd

    from .job import JobBase
    from .ops import QueueOps
    from .queue import QueueBase

__all__ = ["AsyncJobBatch", "IncompleteResultsWarning", "JobBatch", "JobBatchBase", "Progress",
           "chunk_frame", "map_items"]

READ_CHUNK = 1000  # job hashes read per round trip
SWEEP_EVERY_S = 5.0  # re-read the states of unfinished jobs this often (one queue)
MULTI_QUEUE_SWEEP_S = 0.5  # ... and this often when the batch spans several queues
STEP_BLOCK_S = 0.5  # longest blocking read of the event stream per step
DEFAULT_DF_CHUNK = 1000  # rows per job when Queue.map gets a DataFrame without chunksize
MAP_RETENTION = {"age": 86400}  # Queue.map's default remove_on_complete / remove_on_fail
FINAL = ("completed", "failed", "missing")
_END_EVENTS = {"completed": "completed", "failed": "failed", "removed": "missing"}


# -- building the jobs of a map -------------------------------------------------------------
def check_chunksize(chunksize: object) -> int | None:
    if chunksize is None:
        return None
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize <= 0:
        raise InvalidOptionError(f"chunksize must be an int >= 1 (or None): {chunksize!r}")
    return chunksize


def is_frame(value: object) -> bool:
    mod = type(value).__module__
    return mod.startswith("pandas") and type(value).__name__ == "DataFrame"


def map_items(items: Any, chunksize: int | None = None,
              job_type: str | None = None) -> list[dict[str, Any]]:
    """The job data of ``Queue.map(items, chunksize=...)`` (no I/O; see ``Queue.map``).

    - a DataFrame: one job per ``chunksize`` rows (default 1000), data
      ``{"type": job_type or "dataframe_chunk", "payload": {"chunk": k, "start": i,
      "stop": j, "columns": [...], "index": [...], "records": [{column: value}, ...]}}``
      (rows ``i`` to ``j - 1`` by position; values as ``DataFrame.to_json`` gives them:
      dates as ISO 8601 strings, NaN as ``None``). ``chunk_frame(job)`` rebuilds the frame.
    - data dicts, ``chunksize=None``: one job per dict (``job_type`` fills in a missing
      ``"type"``).
    - data dicts, ``chunksize=N``: one job per N dicts, data ``{"type": job_type or
      "chunk", "payload": {"chunk": k, "start": i, "stop": j, "items": [dict, ...]}}``.
    """
    size = check_chunksize(chunksize)
    if job_type is not None and not isinstance(job_type, str):
        raise InvalidOptionError(f"job_type must be a str: {job_type!r}")
    if is_frame(items):
        return _frame_chunks(items, size or DEFAULT_DF_CHUNK, job_type or "dataframe_chunk")
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise TypeError("Queue.map takes a DataFrame or an iterable of data dicts, not "
                        f"{type(items).__name__} (one job: Queue.add)")
    datas = list(items)
    for i, d in enumerate(datas):
        if not isinstance(d, Mapping):
            raise TypeError(f"Queue.map: item {i} is a {type(d).__name__}, not a data dict "
                            "(e.g. {'type': 'score', 'payload': {...}})")
    if size is None:
        if job_type is None:
            return [d if isinstance(d, dict) else dict(d) for d in datas]
        return [d if "type" in d else {**d, "type": job_type} for d in datas]
    return [{"type": job_type or "chunk",
             "payload": {"chunk": k, "start": i, "stop": min(i + size, len(datas)),
                         "items": [dict(d) for d in datas[i:i + size]]}}
            for k, i in enumerate(range(0, len(datas), size))]


def _frame_chunks(df: pd.DataFrame, size: int, job_type: str) -> list[dict[str, Any]]:
    if not df.columns.is_unique:
        dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise InvalidOptionError(f"Queue.map: the DataFrame has duplicate columns {dup}; "
                                 "rename them first (each row becomes a dict)")
    out: list[dict[str, Any]] = []
    for k, i in enumerate(range(0, len(df), size)):
        part = df.iloc[i:i + size]
        # to_json: C speed, and the values become JSON ones (ISO dates, NaN -> null)
        split = json.loads(part.to_json(orient="split", date_format="iso",
                                        default_handler=str))
        columns = [str(c) for c in split["columns"]]
        out.append({"type": job_type, "payload": {
            "chunk": k, "start": i, "stop": i + len(part), "columns": columns,
            "index": split["index"],
            "records": [dict(zip(columns, row)) for row in split["data"]]}})
    return out


def chunk_frame(job: Any) -> pd.DataFrame:
    """The DataFrame chunk a ``Queue.map`` job carries, exactly as it was in the mapped
    frame (dtypes, index, column order): read from the artifact store and checked against
    its content hash (``ArtifactError`` if it was changed or is gone)."""
    import pandas as pd

    payload = job.payload if hasattr(job, "payload") else job
    ref = chunk_ref(payload)
    if ref is not None:
        return load_chunk(job, ref)
    if not isinstance(payload, Mapping) or "records" not in payload:
        raise TypeError("chunk_frame takes a job (or payload) made by Queue.map from a "
                        "DataFrame")
    return pd.DataFrame.from_records(payload["records"], index=payload.get("index"),
                                     columns=payload.get("columns"))


# -- the progress display -------------------------------------------------------------------
def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _fmt_eta(secs: float) -> str:
    total = round(secs)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Progress:
    """The live display of a ``wait``: done/total, failures, rate and ETA.

    ``mode``: ``"html"`` (a notebook output updated in place), ``"text"`` (a bar on
    ``stream``, redrawn with ``\\r``), or ``None`` (nothing). ``auto()`` picks html in a
    notebook kernel, text on a terminal, else nothing."""

    total: int
    mode: str | None
    stream: TextIO | None = None
    every: float = 0.2
    _handle: Any = None
    _last: float = -1.0
    _start: float = field(default_factory=time.monotonic)
    text: str = ""

    @staticmethod
    def pick(progress: bool | str | None) -> str | None:
        if progress is None or progress is False:
            return None
        if progress is True:
            if _in_notebook():
                return "html"
            return "text" if sys.stderr.isatty() else None
        if progress in ("html", "text"):
            return str(progress)
        raise InvalidOptionError(f"progress must be True, False, 'html' or 'text': "
                                 f"{progress!r}")

    def summary(self, done: int, failed: int) -> tuple[str, float, float | None]:
        elapsed = max(1e-9, time.monotonic() - self._start)
        rate = done / elapsed
        left = self.total - done
        eta = left / rate if rate > 0 else None
        parts = [f"{done}/{self.total} done", f"{failed} failed", f"{rate:,.1f} jobs/s"]
        parts.append("ETA " + (_fmt_eta(eta) if eta is not None else "?")
                     if left else f"in {elapsed:.1f}s")
        return ", ".join(parts), rate, eta

    def html(self, done: int, failed: int) -> str:
        text, _, _ = self.summary(done, failed)
        colour = "#c0392b" if failed else "#2e7d32"
        return (f"<div class='nbqueue-batch'><progress value='{done}' "
                f"max='{max(1, self.total)}' style='width:20em'></progress> "
                f"<span style='color:{colour}'>{html.escape(text)}</span></div>")

    def update(self, done: int, failed: int, final: bool = False) -> None:
        self.text = self.summary(done, failed)[0]
        if self.mode is None:
            return
        now = time.monotonic()
        if not final and now - self._last < self.every:
            return
        self._last = now
        if self.mode == "html":
            from IPython.display import HTML, display

            if self._handle is None:
                self._handle = display(HTML(self.html(done, failed)), display_id=True)
            else:
                self._handle.update(HTML(self.html(done, failed)))
            return
        stream = self.stream or sys.stderr
        width = 30
        filled = int(width * done / self.total) if self.total else width
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.text}")
        if final:
            stream.write("\n")
        stream.flush()


# -- following the jobs ---------------------------------------------------------------------
@dataclass
class _Tracker:
    """What a batch knows about its jobs' ends, advanced one step (one op) at a time."""

    queues: dict[str, QueueBase]  # name -> queue
    ids: dict[str, list[str]]  # queue name -> job ids
    final: dict[tuple[str, str], str]  # (queue, id) -> completed | failed | missing
    last_event: str | None = None
    swept_at: float = 0.0
    _wanted_cache: tuple[str, set[str]] | None = None
    # the outcome of each finished job, read as soon as it was seen finished (retention may
    # trim a finished job later: a queue keeps its newest completed jobs, not a batch's)
    outcomes: dict[tuple[str, str], _Outcome] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self.ids.values()) - len(self.final)

    def pending_ops(self) -> list[QueueOps]:
        """The queues that hold jobs not finished yet."""
        return [self.queues[n]._ops for n, ids in self.ids.items()
                if any((n, i) not in self.final for i in ids)]

    def _sweep(self) -> Op[list[tuple[str, str]]]:
        """Read the state of every unfinished job (pipelined, READ_CHUNK per trip)."""
        newly: list[tuple[str, str]] = []
        for name, ids in self.ids.items():
            todo = [(name, i) for i in ids if (name, i) not in self.final]
            for c in range(0, len(todo), READ_CHUNK):
                newly += yield from self._read(todo[c:c + READ_CHUNK])
        self.swept_at = time.monotonic()
        return newly

    def _read(self, keys: Sequence[tuple[str, str]]) -> Op[list[tuple[str, str]]]:
        """Read the outcome of ``keys`` (one round trip); those that have ended."""
        outs = yield from read_outcomes(self.queues, keys)
        ended = []
        for key, out in zip(keys, outs):
            if out.state in FINAL:
                self.final[key] = out.state
                self.outcomes[key] = out
                ended.append(key)
            else:  # an event said it ended, but it was retried meanwhile
                self.final.pop(key, None)
                self.outcomes.pop(key, None)
        return ended

    def step(self, block_s: float) -> Op[list[tuple[str, str]]]:
        """One step: the jobs found finished since the last one (waits up to ``block_s``
        for news when there is none yet)."""
        first = next(iter(self.queues.values()))
        if self.last_event is None:
            # the stream position before the first sweep: no end can fall between them
            self.last_event = yield from first._ops.last_event_id()
            newly = yield from self._sweep()
            if newly or not self.pending:
                return newly
        newly = []
        last, events = yield from first._ops.read_events(
            self.last_event, max(1, int(block_s * 1000)), 10_000)
        self.last_event = last
        name = first.name
        wanted = self._wanted(name)
        seen: dict[tuple[str, str], None] = {}
        for e in events:
            end = _END_EVENTS.get(e.event) or (e.event == "cancelled" or None)
            if end and e.job_id in wanted and (name, e.job_id) not in self.final:
                seen[(name, e.job_id)] = None
        keys = list(seen)
        for c in range(0, len(keys), READ_CHUNK):
            newly += yield from self._read(keys[c:c + READ_CHUNK])
        every = SWEEP_EVERY_S if len(self.queues) == 1 else MULTI_QUEUE_SWEEP_S
        if self.pending and time.monotonic() - self.swept_at >= every:
            newly += yield from self._sweep()
        return newly

    def _wanted(self, name: str) -> set[str]:
        cache = self._wanted_cache
        if cache is None or cache[0] != name:
            cache = self._wanted_cache = (name, set(self.ids.get(name, ())))
        return cache[1]


@dataclass
class _Outcome:
    state: str
    value: Any = None
    error: JobFailedError | JobNotFoundError | ArtifactError | None = None


class JobBatchBase(list["JobBase"]):
    """The jobs of a bulk add or map, in input order (a ``list`` of ``Job``).

    The operations are written once here (as ops); ``JobBatch`` runs them blocking and
    ``nbqueue.aio.JobBatch`` awaitable."""

    #: the name of a named batch (``Queue.map(..., name=)``, ``get_batch``), else None
    name: str | None = None

    def __init__(self, jobs: Iterable[JobBase] = ()) -> None:
        super().__init__(jobs)
        self._tracker_cache: _Tracker | None = None

    # -- shared pieces -------------------------------------------------------------------
    @property
    def _tracker(self) -> _Tracker:
        t = self._tracker_cache
        n = len(self)
        if t is None or sum(len(v) for v in t.ids.values()) != n:
            queues: dict[str, QueueBase] = {}
            ids: dict[str, list[str]] = {}
            for j in self:
                queues.setdefault(j.queue.name, j.queue)
                ids.setdefault(j.queue.name, []).append(j.id)
            t = _Tracker(queues, ids, dict(t.final) if t is not None else {})
            self._tracker_cache = t
        return t

    @property
    def _queue(self) -> QueueBase:
        if not self:
            raise InvalidOptionError("this batch has no jobs")
        return self[0].queue

    def _counts(self) -> tuple[int, int]:
        final = self._tracker.final
        return len(final), sum(1 for s in final.values() if s != "completed")

    def _wait_step(self, deadline: float | None) -> Op[list[tuple[str, str]]]:
        left = STEP_BLOCK_S if deadline is None else min(STEP_BLOCK_S,
                                                         deadline - time.monotonic())
        return (yield from self._tracker.step(max(0.001, left)))

    def _wait(self, timeout: float | None = None, progress: bool | str | None = True,
              stream: TextIO | None = None) -> Op[JobBatchBase]:
        """Block until every job has finished (completed, failed or gone)."""
        mode = Progress.pick(progress)
        bar = Progress(len(self), mode, stream)
        deadline = None if timeout is None else time.monotonic() + timeout
        tracker = self._tracker
        watch = WorkerWatch()  # no live worker on a queue of the batch: say so
        if tracker.last_event is None:
            yield from tracker.step(0.001)  # the first look: a sweep of every job
        while True:
            done, failed = self._counts()
            bar.update(done, failed, final=not tracker.pending)
            if not tracker.pending:
                return self
            if deadline is not None and time.monotonic() >= deadline:
                bar.update(done, failed, final=True)
                why = yield from watch.note(tracker.pending_ops(), "they keep running: wait "
                                            "again, or cancel()")
                raise ResultTimeoutError(f"{len(self) - done} of {len(self)} job(s) not finished "
                                   f"after {timeout:g}s ({failed} failed); {why}")
            yield from watch.step(tracker.pending_ops())
            yield from self._wait_step(deadline)

    def _read_outcomes(self) -> Op[list[_Outcome]]:
        """State, return value and failure of every job, in input order (those seen ended
        while waiting were read then)."""
        tracker = self._tracker
        keys = [(j.queue.name, j.id) for j in self]
        todo = [k for k in keys if k not in tracker.outcomes]
        read: dict[tuple[str, str], _Outcome] = {}
        for c in range(0, len(todo), READ_CHUNK):
            part = todo[c:c + READ_CHUNK]
            read.update(zip(part, (yield from read_outcomes(tracker.queues, part))))
        return [tracker.outcomes.get(k) or read[k] for k in keys]

    def _results(self, timeout: float | None = None, return_exceptions: bool = False,
                 progress: bool | str | None = False) -> Op[list[Any]]:
        yield from self._wait(timeout, progress)
        outs = yield from self._read_outcomes()
        if not return_exceptions:
            bad = [o for o in outs if o.error is not None]
            if bad:
                err = bad[0].error
                assert err is not None
                _note(err, f"{len(bad)} of {len(outs)} job(s) of this batch did not "
                             "complete; results(return_exceptions=True) returns the others, "
                             "failed() lists the failed jobs")
                raise err
        return [o.error if o.error is not None else o.value for o in outs]

    def _failed(self) -> Op[list[JobBase]]:
        """The jobs that ended failed (as they are now), in input order."""
        outs = yield from self._read_outcomes()
        failed = [j for j, o in zip(self, outs) if o.state == "failed"]
        for j in failed:
            yield from j._refresh()
        return failed

    def _retry_failed(self) -> Op[int]:
        """Move this batch's failed jobs back to wait (attempts reset); how many moved."""
        outs = yield from self._read_outcomes()
        failed = [j for j, o in zip(self, outs) if o.state == "failed"]
        moved = 0
        for c in range(0, len(failed), READ_CHUNK):
            part = failed[c:c + READ_CHUNK]
            replies = yield Batch([j.queue._ops.call("retry_failed", 0, j.id) for j in part])
            # re-arms dependents of the batch's jobs (DESIGN "Fan-in is never partial")
            moved += yield from after_retry([(j.queue._ops, x) for j, x in zip(part, replies)])
        tracker = self._tracker
        for j in failed:
            tracker.final.pop((j.queue.name, j.id), None)
            tracker.outcomes.pop((j.queue.name, j.id), None)
        return moved

    def _cancel(self) -> Op[int]:
        """Cancel every job of the batch that has not finished (``Queue.cancel`` each, in
        pipelined chunks); returns how many were cancelled or asked to stop."""
        outs = yield from self._read_outcomes()
        todo = [j for j, o in zip(self, outs) if o.state not in FINAL]
        n = 0
        for c in range(0, len(todo), READ_CHUNK):
            part = todo[c:c + READ_CHUNK]
            replies = yield Batch([j.queue._ops.call("cancel", j.id, "cancelled")
                                   for j in part])
            n += sum(1 for code, _ in replies if int(code) > 0)
            notified = {j.queue.name: j.queue for j, (code, _) in zip(part, replies)
                        if int(code) == 3}
            for queue in notified.values():  # jobs depend on these: tell them now
                from .flows import resolve

                yield from resolve(queue._ops)
        return n

    def _newly_finished(self, deadline: float | None) -> Op[list[JobBase]]:
        """The next jobs to finish (refreshed handles); [] when all have (or time is up)."""
        tracker = self._tracker
        by_key = {(j.queue.name, j.id): j for j in self}
        while tracker.pending:
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(f"{tracker.pending} job(s) of the batch not finished "
                                   "in time")
            newly = yield from self._wait_step(deadline)
            if newly:
                jobs = [by_key[k] for k in newly if k in by_key]
                yield from _refresh_many(jobs)
                return jobs
        return []

    def _emitted_first(self) -> Op[list[JobBase]]:
        """as_completed: the jobs already finished when iteration starts."""
        tracker = self._tracker
        if tracker.last_event is None and self:
            yield from tracker.step(0.001)
        by_key = {(j.queue.name, j.id): j for j in self}
        jobs = [by_key[k] for k in tracker.final if k in by_key]
        yield from _refresh_many(jobs)
        return jobs

    @staticmethod
    def _frame(outs: Sequence[Any], jobs: Sequence[JobBase]) -> pd.DataFrame:
        return results_frame(outs, jobs)

    # -- display -------------------------------------------------------------------------
    def __repr__(self) -> str:
        if not self:
            return "<JobBatch: no jobs>"
        done, failed = self._counts()
        return (f"<JobBatch {len(self)} job(s) of {self[0].queue.name!r}: {done} finished "
                f"as last seen, {failed} failed>")

    def _repr_html_(self) -> str:
        if not self:
            return "<div class='nbqueue-jobs'>no jobs added</div>"
        q = html.escape(self[0].queue_name)
        ids = ", ".join(html.escape(j.id) for j in self[:10])
        more = f" and {len(self) - 10} more" if len(self) > 10 else ""
        return (f"<div class='nbqueue-jobs'>{len(self)} job(s) added to <b>{q}</b>: "
                f"{ids}{more}</div>")


def read_outcomes(queues: Mapping[str, QueueBase],
                  keys: Sequence[tuple[str, str]]) -> Op[list[_Outcome]]:
    """The outcome of each (queue name, job id) as it is now (one pipelined round trip)."""
    replies = yield Batch([Call.cmd("HMGET", queues[name]._ops.keys.job(i), "state", "rv",
                                    "fr", "et", "st") for name, i in keys])
    outs: list[_Outcome] = []
    for (name, i), (state, rv, fr, et, st) in zip(keys, replies):
        if state is None:
            outs.append(_Outcome("missing", error=JobNotFoundError(
                f"job {i} of queue {name!r} is gone (removed, or trimmed by retention "
                "before its result was read)")))
        elif state == "completed":
            outs.append(_Outcome(state, json.loads(rv) if rv else None))
        elif state == "failed":
            traces = parse_traces(st)
            outs.append(_Outcome(state, error=JobFailedError(i, fr, et,
                                                             traces[-1] if traces else None)))
        else:
            outs.append(_Outcome(state))
    # frame/Series/array results: their artifacts, read in one round trip per queue
    for name in {n for n, _ in keys}:
        idx = [k for k, ((n, _), o) in enumerate(zip(keys, outs))
               if n == name and o.state == "completed" and ArtifactRef.parse(o.value)]
        if idx:
            values = yield from resolve_many(queues[name]._ops.keys,
                                             [(keys[k][1], outs[k].value) for k in idx], True)
            for k, v in zip(idx, values):
                if isinstance(v, ArtifactError):
                    outs[k] = _Outcome("failed", error=v)
                else:
                    outs[k].value = v
    return outs


def _note(err: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        err.add_note(note)


def _refresh_many(jobs: Sequence[JobBase]) -> Op[None]:
    by_queue: dict[str, list[JobBase]] = {}
    for j in jobs:
        by_queue.setdefault(j.queue.name, []).append(j)
    for group in by_queue.values():
        ops = group[0].queue._ops
        for c in range(0, len(group), READ_CHUNK):
            part = group[c:c + READ_CHUNK]
            records = yield from ops.get_jobs_by_id([j.id for j in part])
            for j, rec in zip(part, records):
                if rec is not None:
                    j._record = rec


class IncompleteResultsWarning(UserWarning):
    """``results_frame(errors="warn")`` (the default): some jobs of the batch failed or are
    gone, so the frame leaves them out (concatenated results) or has them as rows with
    their error (one row per job); the warning names them."""


ERRORS = ("warn", "raise", "ignore")


def _check_errors(errors: object) -> str:
    if errors not in ERRORS:
        raise InvalidOptionError(f"errors must be 'warn', 'raise' or 'ignore', not "
                                 f"{errors!r}")
    return str(errors)


def _incomplete(values: Sequence[Any], jobs: Sequence[JobBase], errors: str,
                left_out: bool) -> None:
    """Name the failed or missing jobs (a warning), or raise the first one's error."""
    bad = [(j, v) for j, v in zip(jobs, values) if isinstance(v, BaseException)]
    if not bad or errors == "ignore":
        return
    if errors == "raise":
        err = bad[0][1]
        _note(err, f"{len(bad)} of {len(values)} job(s) of this batch did not complete; "
                   "results_frame(errors='warn') returns the others")
        raise err
    shown = "; ".join(
        f"job {j.id} " + ("is gone" if isinstance(v, JobNotFoundError) else
                          f"failed ({getattr(v, 'error_type', None) or type(v).__name__}: "
                          f"{getattr(v, 'reason', v)})")
        for j, v in bad[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    where = ("left out of the frame" if left_out else
             "rows with their error in the frame (state failed or missing)")
    warnings.warn(
        f"results_frame: {len(bad)} of {len(values)} job(s) did not complete and are "
        f"{where}: {shown}{more} (batch.failed() lists them, batch.retry_failed() runs "
        "them again; errors='ignore' silences this)", IncompleteResultsWarning,
        stacklevel=user_stacklevel())


def results_frame(values: Sequence[Any], jobs: Sequence[JobBase],
                  errors: str = "warn") -> pd.DataFrame:
    """``JobBatch.results_frame``: see there."""
    import pandas as pd

    ok = [v for v in values if not isinstance(v, BaseException)]
    frames = bool(ok) and all(isinstance(v, pd.DataFrame) for v in ok)
    series = bool(ok) and all(isinstance(v, pd.Series) for v in ok)
    records = bool(ok) and all(isinstance(v, list) and all(isinstance(x, dict) for x in v)
                               for v in ok)
    _incomplete(values, jobs, _check_errors(errors), frames or series or records)
    if frames:
        # frame results (Arrow artifacts): concatenated in input order, dtypes kept
        return pd.concat(ok)
    if series:
        return pd.concat(ok).to_frame()
    if records:
        # chunk results that are lists of records: the concatenated records, input order
        return pd.DataFrame.from_records([rec for v in ok for rec in v])
    index = pd.Index([j.id for j in jobs], name="job_id", dtype="object")
    meta = {
        "state": ["completed" if not isinstance(v, BaseException) else
                  ("missing" if isinstance(v, JobNotFoundError) else "failed") for v in values],
        "error": [str(getattr(v, "reason", v)) if isinstance(v, BaseException) else None
                  for v in values],
        "error_type": [getattr(v, "error_type", None) if isinstance(v, BaseException)
                       else None for v in values],
    }
    if ok and all(isinstance(v, dict) for v in ok) and not (
            set().union(*[set(v) for v in ok]) & set(meta)):
        cols = list(dict.fromkeys(k for v in ok for k in v))
        body = pd.DataFrame.from_records(
            [v if isinstance(v, dict) else {} for v in values], columns=cols, index=index)
    else:
        body = pd.DataFrame({"result": pd.Series(
            [None if isinstance(v, BaseException) else v for v in values], dtype="object",
            index=index)}, index=index)
    for k, col in meta.items():
        body[k] = pd.Series(col, index=index, dtype="object")
    return body


class JobBatch(JobBatchBase):
    """A batch of jobs with blocking methods (``nbqueue.aio.JobBatch``: awaitable)."""

    def _run(self, op: Op[Any]) -> Any:
        return self._queue._run(op)

    def _look(self) -> None:
        """Read which jobs have ended (one quick step), for a display of the batch now."""
        if self:
            with contextlib.suppress(Exception):
                self._run(self._tracker.step(0.001))

    def _repr_html_(self) -> str:
        """The batch as a whole: done/total, failures, the queues, the first job ids."""
        from .display import batch_html

        if not self:
            return "<div class='nbqueue-jobs'>no jobs added</div>"
        self._look()
        done, failed = self._counts()
        ids = ", ".join(html.escape(j.id) for j in self[:10])
        more = f" and {len(self) - 10} more" if len(self) > 10 else ""
        return (batch_html(len(self), done, failed, queues=[j.queue_name for j in self])
                + f"<div style='font-size:90%;color:#555'>jobs {ids}{more}</div>")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from .display import batch_text

        self._look()
        done, failed = self._counts()
        p.text(batch_text(len(self), done, failed) + f" of {len(self)} job(s)")

    def wait(self, timeout: float | None = None, progress: bool | str = True) -> JobBatch:
        """Block until every job has finished, showing done/total, failures, rate and ETA
        (a notebook: an HTML bar updated in place; a terminal: a text bar on stderr;
        ``progress="html"|"text"`` forces one, ``False`` shows nothing). Raises
        ``TimeoutError`` after ``timeout`` seconds (the jobs keep running). Returns self."""
        if not self:
            Progress(0, Progress.pick(progress)).update(0, 0, final=True)
            return self
        from .kernel import cooperative  # dashboard clicks work while it waits

        self._run(cooperative(self._wait(timeout, progress)))
        return self

    def results(self, timeout: float | None = None, *, return_exceptions: bool = False,
                progress: bool | str = False) -> list[Any]:
        """The return values in input order, once all jobs finished. A failed (or removed)
        job raises its ``JobFailedError`` (``JobNotFoundError``) unless
        ``return_exceptions=True``, which puts the exception in its place."""
        if not self:
            return []
        from .kernel import cooperative

        return list(self._run(cooperative(self._results(timeout, return_exceptions,
                                                         progress))))

    def as_completed(self, timeout: float | None = None) -> Iterator[Job]:
        """Yield each job (refreshed) as it finishes, first finished first."""
        if not self:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: set[tuple[str, str]] = set()
        for j in _unseen(self._run(self._emitted_first()), seen):
            yield j
        while True:
            jobs = self._run(self._newly_finished(deadline))
            if not jobs:
                return
            for j in _unseen(jobs, seen):
                yield j

    def results_frame(self, timeout: float | None = None,
                      errors: str = "warn") -> pd.DataFrame:
        """The results as a DataFrame, once every job has finished:

        - every result a DataFrame (or Series): them concatenated in input order, dtypes
          and index kept (``pd.concat``; Series as a one-column frame);
        - every result a list of dicts (JSON chunk results): the concatenated records;
        - else one row per job (index ``job_id``; a dict result's keys as columns, other
          results in ``result``) with ``state``, ``error`` and ``error_type`` columns.

        A failed or missing job: ``errors="warn"`` (default) names it in an
        ``IncompleteResultsWarning`` (concatenated results leave it out); ``"raise"``
        raises its ``JobFailedError`` (``JobNotFoundError`` for a job gone);
        ``"ignore"``: silent."""
        _check_errors(errors)
        values = self.results(timeout, return_exceptions=True)
        return results_frame(values, self, errors)

    def failed(self) -> list[Job]:
        """The jobs of this batch that ended failed (refreshed), in input order."""
        if not self:
            return []
        return list(self._run(self._failed()))

    def retry_failed(self) -> int:
        """Move the failed jobs of this batch back to wait; returns how many."""
        if not self:
            return 0
        return int(self._run(self._retry_failed()))

    def cancel(self) -> int:
        """Cancel the jobs of this batch that have not finished; returns how many."""
        if not self:
            return 0
        return int(self._run(self._cancel()))


if TYPE_CHECKING:
    from .job import Job


class AsyncJobBatch(JobBatchBase):
    """``nbqueue.aio.JobBatch``: the methods of ``JobBatch``, awaitable."""

    async def _run(self, op: Op[Any]) -> Any:
        return await self._queue._run(op)

    async def wait(self, timeout: float | None = None,
                   progress: bool | str = True) -> AsyncJobBatch:
        """See ``JobBatch.wait``."""
        if not self:
            Progress(0, Progress.pick(progress)).update(0, 0, final=True)
            return self
        await self._run(self._wait(timeout, progress))
        return self

    async def results(self, timeout: float | None = None, *, return_exceptions: bool = False,
                      progress: bool | str = False) -> list[Any]:
        """See ``JobBatch.results``."""
        if not self:
            return []
        return list(await self._run(self._results(timeout, return_exceptions, progress)))

    async def as_completed(self, timeout: float | None = None) -> AsyncIterator[JobBase]:
        """See ``JobBatch.as_completed`` (``async for job in batch.as_completed()``)."""
        if not self:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: set[tuple[str, str]] = set()
        for j in _unseen(await self._run(self._emitted_first()), seen):
            yield j
        while True:
            jobs = await self._run(self._newly_finished(deadline))
            if not jobs:
                return
            for j in _unseen(jobs, seen):
                yield j

    async def results_frame(self, timeout: float | None = None,
                            errors: str = "warn") -> pd.DataFrame:
        """See ``JobBatch.results_frame``."""
        _check_errors(errors)
        values = await self.results(timeout, return_exceptions=True)
        return results_frame(values, self, errors)

    async def failed(self) -> list[JobBase]:
        """See ``JobBatch.failed``."""
        return list(await self._run(self._failed())) if self else []

    async def retry_failed(self) -> int:
        """See ``JobBatch.retry_failed``."""
        return int(await self._run(self._retry_failed())) if self else 0

    async def cancel(self) -> int:
        """See ``JobBatch.cancel``."""
        return int(await self._run(self._cancel())) if self else 0


def _unseen(jobs: Iterable[Any], seen: set[tuple[str, str]]) -> list[Any]:
    """The jobs not in ``seen`` (by queue and id), now added to it: as_completed yields each
    job once (sync and async alike)."""
    fresh = []
    for j in jobs:
        key = (j.queue.name, j.id)
        if key not in seen:
            seen.add(key)
            fresh.append(j)
    return fresh
