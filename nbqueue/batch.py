"""``JobBatch``: the jobs of one bulk add or ``Queue.map``, waited on and gathered together.

A ``JobBatch`` is a ``list`` of ``Job`` handles (so code written for ``add_bulk``'s list
keeps working) with batch methods: ``wait`` (with a live progress display,
``display.Progress``), ``results`` (in input order), ``as_completed``, ``results_frame``
(``frames.results_frame``), ``failed``, ``retry_failed`` and ``cancel``.
``nbqueue.aio.JobBatch`` has the same methods, awaitable. ``JobBatchBase`` is generic in
its job handle: ``JobBatch`` is a ``list[Job]``, ``aio.JobBatch`` a ``list[aio.Job]``.

Waiting is cheap for any size: the batch follows its queue's event stream (one blocking
``XREAD`` per step, whatever the number of jobs, see ``nbqueue.follow``); a small result
comes with its ``completed`` event, so the batch reads a job only when it failed or its
result is large. All jobs are read (pipelined chunks) only at the start when the batch was
not added by this process, when the capped stream rolled past the last entry read, and
every ``follow.MULTI_QUEUE_SWEEP_S`` for jobs of queues other than the first (whose events are
not followed); never one round trip per job per poll. Every read and write is an
operation of ``QueueOps`` (``outcomes``, ``cancel_many``, ``retry_jobs``...); jobs of
several queues are read in one round trip (``protocol.together``). Architecture:
docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import html
import json
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeVar

from . import follow, otel
from .arrowcodec import materialize
from .display import Progress
from .errors import IncompleteResultsWarning, InvalidOptionError, ResultTimeoutError
from .follow import READ_CHUNK, Key, Tracker, read_ends
from .job import AsyncJob, Job, JobBase
from .liveness import WorkerWatch
from .protocol import Op
from .records import JobEnd

if TYPE_CHECKING:
    import pandas as pd

    from .ops import QueueOps
    from .queue import QueueBase

__all__ = ["AsyncJobBatch", "IncompleteResultsWarning", "JobBatch", "JobBatchBase",
           "map_items"]

STEP_BLOCK_S = 0.5  # longest blocking read of the event stream per step
DEFAULT_DF_CHUNK = 1000  # rows per job when Queue.map gets a DataFrame without chunksize
MAP_RETENTION = {"age": 86400}  # Queue.map's default remove_on_complete / remove_on_fail

J = TypeVar("J", bound=JobBase)


# -- building the jobs of a map -------------------------------------------------------------
# chunksize="auto" (a list of data dicts): see auto_chunksize
AUTO_CHUNKS_PER_SLOT = 4  # jobs per worker slot (multiprocessing.Pool.map's rule)
AUTO_SLOTS_IF_NONE = 8  # slots assumed when no worker of the queue is registered
AUTO_CHUNK_BYTES = 64 * 1024  # ... and chunks of at most about this much JSON
AUTO_SAMPLE = 100  # items whose JSON size is measured


def check_chunksize(chunksize: object) -> int | str | None:
    if chunksize is None or chunksize == "auto":
        return chunksize
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize <= 0:
        raise InvalidOptionError(f"chunksize must be an int >= 1, 'auto' or None: "
                                 f"{chunksize!r}")
    return chunksize


def auto_chunksize(datas: Sequence[Any], slots: int) -> int:
    """``Queue.map(items, chunksize="auto")``'s chunk size for ``len(datas)`` items and
    ``slots`` worker slots (the summed concurrency of the queue's live workers).

    About ``AUTO_CHUNKS_PER_SLOT`` jobs per slot, so every slot gets work and a slow chunk
    can be balanced by the others (``multiprocessing.Pool.map``'s default), but no chunk of
    more than about ``AUTO_CHUNK_BYTES`` of JSON (measured on a sample of the items; a chunk
    is one job's data, and large job data is slow to add and warned about): ``max(1,
    min(ceil(n / (4 x slots)), 64 KiB // mean item size))``."""
    n = len(datas)
    if n == 0:
        return 1
    by_slots = -(-n // (AUTO_CHUNKS_PER_SLOT * max(1, slots)))
    sample = list(datas[::max(1, n // AUTO_SAMPLE)])[:AUTO_SAMPLE]
    mean = sum(len(json.dumps(d, default=str)) for d in sample) / len(sample)
    return max(1, min(by_slots, int(AUTO_CHUNK_BYTES // max(1.0, mean))))


def is_frame(value: object) -> bool:
    mod = type(value).__module__
    return mod.startswith("pandas") and type(value).__name__ == "DataFrame"


def map_items(items: Any, chunksize: int | str | None = None,
              job_type: str | None = None, slots: int = AUTO_SLOTS_IF_NONE
              ) -> list[dict[str, Any]]:
    """The JSON job data of ``Queue.map(items, chunksize=...)`` of data dicts (no I/O).

    ``Queue.map`` sends a DataFrame as Arrow chunks instead (``nbqueue.dataplane``: exact
    dtypes, no size limit); this function still gives a frame's JSON form:

    - a DataFrame: one job per ``chunksize`` rows (default 1000), data
      ``{"type": job_type or "dataframe_chunk", "payload": {"chunk": k, "start": i,
      "stop": j, "columns": [...], "index": [...], "records": [{column: value}, ...]}}``
      (rows ``i`` to ``j - 1`` by position; values as ``DataFrame.to_json`` gives them:
      dates as ISO 8601 strings, NaN as ``None``; ``frames.frame_chunks``).
      ``chunk_frame(job)`` rebuilds the frame.
    - data dicts, ``chunksize=None``: one job per dict (``job_type`` fills in a missing
      ``"type"``).
    - data dicts, ``chunksize=N``: one job per N dicts, data ``{"type": job_type or
      "chunk", "payload": {"chunk": k, "start": i, "stop": j, "items": [dict, ...]}}``.
    - data dicts, ``chunksize="auto"``: the same with N = ``auto_chunksize(items, slots)``
      (``slots``: the queue's worker slots); a DataFrame: the default rows per job.
    """
    checked = check_chunksize(chunksize)
    if job_type is not None and not isinstance(job_type, str):
        raise InvalidOptionError(f"job_type must be a str: {job_type!r}")
    if is_frame(items):
        from .frames import frame_chunks  # pandas is loaded: items is a DataFrame

        rows = checked if isinstance(checked, int) else DEFAULT_DF_CHUNK
        return frame_chunks(items, rows, job_type or "dataframe_chunk")
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise TypeError("Queue.map takes a DataFrame or an iterable of data dicts, not "
                        f"{type(items).__name__} (one job: Queue.add)")
    # plain dicts as they are (the exact-type test first: an ABC isinstance costs ~1 µs an
    # item, and a copy per item was a third of a 20,000-item map's encoding time)
    datas = [d if type(d) is dict else _data_dict(i, d) for i, d in enumerate(items)]
    size = auto_chunksize(datas, slots) if isinstance(checked, str) else checked
    if size is None:
        if job_type is None:
            return datas
        return [d if "type" in d else {**d, "type": job_type} for d in datas]
    return [{"type": job_type or "chunk",
             "payload": {"chunk": k, "start": i, "stop": min(i + size, len(datas)),
                         "items": datas[i:i + size]}}
            for k, i in enumerate(range(0, len(datas), size))]


def _data_dict(i: int, d: Any) -> dict[str, Any]:
    """Item ``i`` of a map that is not a plain dict: a copy if it is a Mapping."""
    if not isinstance(d, Mapping):
        raise TypeError(f"Queue.map: item {i} is a {type(d).__name__}, not a data dict "
                        "(e.g. {'type': 'score', 'payload': {...}})")
    return dict(d)


# -- following the jobs ---------------------------------------------------------------------
class JobBatchBase(list[J], Generic[J]):
    """The jobs of a bulk add or map, in input order (a ``list`` of job handles ``J``).

    The operations are written once here (as ops); ``JobBatch`` (a ``list[Job]``) runs
    them blocking and ``nbqueue.aio.JobBatch`` (a ``list[aio.Job]``) awaitable."""

    #: the name of a named batch (``Queue.map(..., name=)``, ``get_batch``), else None
    name: str | None = None

    def __init__(self, jobs: Iterable[J] = ()) -> None:
        super().__init__(jobs)
        self._tracker_cache: Tracker | None = None

    # -- shared pieces -------------------------------------------------------------------
    @property
    def _tracker(self) -> Tracker:
        t = self._tracker_cache
        n = len(self)
        if t is None or sum(len(v) for v in t.ids.values()) != n:
            queues: dict[str, QueueOps] = {}
            ids: dict[str, list[str]] = {}
            for j in self:
                queues.setdefault(j.queue.name, j.queue.ops)
                ids.setdefault(j.queue.name, []).append(j.id)
            followed = self[0].queue.name if self else ""
            sinces = [j._record.since for j in self if j.queue.name == followed]
            since = (follow.earliest(s for s in sinces if s is not None)
                     if sinces and all(sinces) else None)
            t = Tracker(queues, ids, dict(t.final) if t is not None else {}, since)
            self._tracker_cache = t
        return t

    @property
    def _queue(self) -> QueueBase[Any, Any]:
        if not self:
            raise InvalidOptionError("this batch has no jobs")
        return self[0].queue

    def _by_queue(self, jobs: Iterable[J]) -> dict[str, list[J]]:
        out: dict[str, list[J]] = {}
        for j in jobs:
            out.setdefault(j.queue.name, []).append(j)
        return out

    def _counts(self) -> tuple[int, int]:
        tracker = self._tracker
        return len(tracker.final), tracker.bad

    def _wait_step(self, deadline: float | None) -> Op[list[Key]]:
        left = STEP_BLOCK_S if deadline is None else min(STEP_BLOCK_S,
                                                         deadline - time.monotonic())
        return (yield from self._tracker.step(max(0.001, left)))

    def _wait(self, timeout: float | None = None, progress: bool | str | None = True,
              stream: TextIO | None = None) -> Op[JobBatchBase[J]]:
        """Block until every job has finished (completed, failed or gone)."""
        if otel.ENABLED and len(self):  # a "wait <queue>" span (nbqueue.otel)
            return (yield from otel.waiting(self[0].queue.name, [j.id for j in self],
                                            self._wait_op(timeout, progress, stream)))
        return (yield from self._wait_op(timeout, progress, stream))

    def _wait_op(self, timeout: float | None, progress: bool | str | None,
                 stream: TextIO | None) -> Op[JobBatchBase[J]]:
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
                raise ResultTimeoutError(f"{len(self) - done} of {len(self)} job(s) not "
                                         f"finished after {timeout:g}s ({failed} failed); "
                                         f"{why}")
            yield from watch.step(tracker.pending_ops())
            yield from self._wait_step(deadline)

    def _ends(self) -> Op[list[JobEnd]]:
        """How every job ended (or that it has not), in input order (those seen ended while
        waiting were read then)."""
        tracker = self._tracker
        keys = [(j.queue.name, j.id) for j in self]
        todo = [k for k in keys if k not in tracker.ends]
        read: dict[Key, JobEnd] = {}
        for c in range(0, len(todo), READ_CHUNK):
            part = todo[c:c + READ_CHUNK]
            read.update(zip(part, (yield from read_ends(tracker.queues, part))))
        return [tracker.ends.get(k) or read[k] for k in keys]

    def _results(self, timeout: float | None = None, return_exceptions: bool = False,
                 progress: bool | str | None = False, frames: bool = False) -> Op[list[Any]]:
        """The values (``frames``: DataFrames left as ``arrowcodec.FrameTable``, for
        ``results_frame`` to join)."""
        yield from self._wait(timeout, progress)
        outs = yield from self._ends()
        if not return_exceptions:
            bad = [o for o in outs if o.error is not None]
            if bad:
                err = bad[0].error
                assert err is not None
                _note(err, f"{len(bad)} of {len(outs)} job(s) of this batch did not "
                           "complete; results(return_exceptions=True) returns the others, "
                           "failed() lists the failed jobs")
                raise err
        value = (lambda v: v) if frames else materialize
        return [o.error if o.error is not None else value(o.value) for o in outs]

    def _failed(self) -> Op[list[J]]:
        """The jobs that ended failed (as they are now), in input order."""
        outs = yield from self._ends()
        failed = [j for j, o in zip(self, outs) if o.state == "failed"]
        yield from _refresh_many(failed)
        return failed

    def _retry_failed(self) -> Op[int]:
        """Move this batch's failed jobs back to wait (attempts reset); how many moved."""
        outs = yield from self._ends()
        failed = [j for j, o in zip(self, outs) if o.state == "failed"]
        moved = 0
        for group in self._by_queue(failed).values():
            ops = group[0].queue.ops
            for c in range(0, len(group), READ_CHUNK):
                moved += yield from ops.retry_jobs([j.id for j in group[c:c + READ_CHUNK]])
        self._tracker.forget((j.queue.name, j.id) for j in failed)
        return moved

    def _cancel(self) -> Op[int]:
        """Cancel every job of the batch that has not finished (``QueueOps.cancel_many``,
        in pipelined chunks); returns how many were cancelled or asked to stop."""
        outs = yield from self._ends()
        todo = [j for j, o in zip(self, outs) if not o.ended]
        n = 0
        for group in self._by_queue(todo).values():
            ops = group[0].queue.ops
            for c in range(0, len(group), READ_CHUNK):
                n += yield from ops.cancel_many([j.id for j in group[c:c + READ_CHUNK]])
        return n

    def _newly_finished(self, deadline: float | None) -> Op[list[J]]:
        """The next jobs to finish (refreshed handles); [] when all have (or time is up)."""
        tracker = self._tracker
        by_key = {(j.queue.name, j.id): j for j in self}
        while tracker.pending:
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(f"{tracker.pending} job(s) of the batch not "
                                         "finished in time")
            newly = yield from self._wait_step(deadline)
            if newly:
                jobs = [by_key[k] for k in newly if k in by_key]
                yield from _refresh_many(jobs)
                return jobs
        return []

    def _emitted_first(self) -> Op[list[J]]:
        """as_completed: the jobs already finished when iteration starts."""
        tracker = self._tracker
        if tracker.last_event is None and self:
            yield from tracker.step(0.001)
        by_key = {(j.queue.name, j.id): j for j in self}
        jobs = [by_key[k] for k in tracker.final if k in by_key]
        yield from _refresh_many(jobs)
        return jobs

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


def _note(err: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        err.add_note(note)


def _refresh_many(jobs: Sequence[JobBase]) -> Op[None]:
    """Re-read the records of ``jobs`` (per queue, READ_CHUNK per round trip)."""
    by_queue: dict[str, list[JobBase]] = {}
    for j in jobs:
        by_queue.setdefault(j.queue.name, []).append(j)
    for group in by_queue.values():
        ops = group[0].queue.ops
        for c in range(0, len(group), READ_CHUNK):
            part = group[c:c + READ_CHUNK]
            records = yield from ops.get_jobs_by_id([j.id for j in part])
            for j, rec in zip(part, records):
                if rec is not None:
                    j._record = rec




class JobBatch(JobBatchBase[Job]):
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
        seen: set[Key] = set()
        yield from _unseen(self._run(self._emitted_first()), seen)
        while True:
            jobs = self._run(self._newly_finished(deadline))
            if not jobs:
                return
            yield from _unseen(jobs, seen)

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
        from .frames import check_errors, results_frame  # (pandas: only for a frame)
        from .kernel import cooperative

        check_errors(errors)
        values = (list(self._run(cooperative(self._results(timeout, True, frames=True))))
                  if self else [])
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


class AsyncJobBatch(JobBatchBase[AsyncJob]):
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

    async def as_completed(self, timeout: float | None = None) -> AsyncIterator[AsyncJob]:
        """See ``JobBatch.as_completed`` (``async for job in batch.as_completed()``)."""
        if not self:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: set[Key] = set()
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
        from .frames import check_errors, results_frame  # (pandas: only for a frame)

        check_errors(errors)
        values = (list(await self._run(self._results(timeout, True, frames=True)))
                  if self else [])
        return results_frame(values, self, errors)

    async def failed(self) -> list[AsyncJob]:
        """See ``JobBatch.failed``."""
        return list(await self._run(self._failed())) if self else []

    async def retry_failed(self) -> int:
        """See ``JobBatch.retry_failed``."""
        return int(await self._run(self._retry_failed())) if self else 0

    async def cancel(self) -> int:
        """See ``JobBatch.cancel``."""
        return int(await self._run(self._cancel())) if self else 0


def _unseen(jobs: Iterable[J], seen: set[Key]) -> list[J]:
    """The jobs not in ``seen`` (by queue and id), now added to it: as_completed yields each
    job once (sync and async alike)."""
    fresh = []
    for j in jobs:
        key = (j.queue.name, j.id)
        if key not in seen:
            seen.add(key)
            fresh.append(j)
    return fresh
