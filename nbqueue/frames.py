"""pandas views of queues, jobs and metrics history, and ``export`` to csv/parquet/markdown.

The column sets are part of the public API and do not depend on the input: an empty list
gives an empty frame with the same columns and dtypes.

``metrics_frame`` (index ``queue``):
    waiting, active, completed, failed, delayed (int64), paused (bool), total,
    waiting_children (int64: jobs held until their dependencies complete).
``jobs_frame`` (index ``job_id``), the concise default set ``JOB_COLUMNS``:
    name (str), state (Categorical of :class:`~nbqueue.JobState` values), progress
    (float64, percent 0-100 as everywhere in nbqueue; 100 for a completed job; NaN when the
    job reported something other than a number), attempts_made (int64), created
    (``datetime64[ns, UTC]``), wait_s (processed - created) and run_s (finished -
    processed) (float64 seconds, NaN when not yet), returnvalue, failed_reason.
    ``columns="all"`` (``ALL_JOB_COLUMNS``) adds queue, priority, attempts (int64),
    processed, finished (``datetime64[ns, UTC]``, NaT when not yet), error_type and data;
    a list of names picks those columns in that order.
``history_frame`` (index ``minute``, ``datetime64[ns, UTC]``, oldest first):
    queue (str), completed, failed, finished (int64; finished = completed + failed).
``workers_frame`` (index ``id``): queue, host, mode (str), pid, concurrency, active (int64),
    started_at, last_heartbeat (``datetime64[ns, UTC]``).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arrowcodec import FrameTable, concat_frames, materialize
from .dataplane import chunk_ref, load_chunk, user_stacklevel
from .display import progress_percent
from .errors import (
    IncompleteResultsWarning,
    InvalidOptionError,
    JobNotFoundError,
    MissingDependencyError,
    NbqueueError,
)

try:
    import pandas as pd
except ModuleNotFoundError as _exc:  # the core install: pip install nbqueue (no [notebook])
    raise MissingDependencyError(
        "pandas", "nbqueue's DataFrames (jobs_frame, metrics_frame, export...)") from _exc
from .types import JobState, QueueMetrics, WorkerInfo

if TYPE_CHECKING:
    from .job import JobBase

__all__ = ["ALL_JOB_COLUMNS", "HISTORY_COLUMNS", "JOB_COLUMNS", "METRICS_COLUMNS",
           "WORKER_COLUMNS", "chunk_frame", "export", "frame_chunks", "history_frame",
           "jobs_frame", "metrics_frame", "progress_percent", "results_frame",
           "workers_frame"]

METRICS_COLUMNS: tuple[str, ...] = ("waiting", "active", "completed", "failed", "delayed",
                                    "paused", "total", "waiting_children")
#: The default (concise) columns of ``jobs_frame``.
JOB_COLUMNS: tuple[str, ...] = (
    "name", "state", "progress", "attempts_made", "created", "wait_s", "run_s",
    "returnvalue", "failed_reason")
#: Every column ``jobs_frame(columns="all")`` has.
ALL_JOB_COLUMNS: tuple[str, ...] = (
    "queue", "name", "state", "priority", "attempts_made", "attempts", "progress",
    "created", "processed", "finished", "wait_s", "run_s", "failed_reason",
    "error_type", "last_error", "returnvalue", "data")
HISTORY_COLUMNS: tuple[str, ...] = ("queue", "completed", "failed", "finished")

#: The categories of ``jobs_frame()["state"]``, in lifecycle order.
STATE_CATEGORIES: tuple[str, ...] = tuple(s.value for s in JobState)


def _utc(values: Sequence[int | None]) -> pd.Series:
    """Epoch milliseconds (None for "not yet") as a UTC datetime series."""
    dt = pd.to_datetime(pd.array(list(values), dtype="Int64"), unit="ms", utc=True)
    return pd.Series(dt).astype("datetime64[ns, UTC]")


def metrics_frame(metrics: Iterable[QueueMetrics]) -> pd.DataFrame:
    """One row per queue, indexed by queue name (see the module docstring for columns)."""
    rows = list(metrics)
    df = pd.DataFrame({
        **{c: pd.Series([getattr(m, c) for m in rows], dtype="int64")
           for c in METRICS_COLUMNS if c != "paused"},
        "paused": pd.Series([bool(m.paused) for m in rows], dtype="bool"),
    }, columns=list(METRICS_COLUMNS))
    df.index = pd.Index([m.queue_name for m in rows], dtype="object", name="queue")
    return df


def _seconds(later: pd.Series, earlier: pd.Series) -> pd.Series:
    return ((later - earlier).dt.total_seconds()).round(3).astype("float64")


def _columns(columns: str | Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(JOB_COLUMNS)
    if isinstance(columns, str):
        if columns != "all":
            raise ValueError(f"columns must be None, 'all' or a list of names, not "
                             f"{columns!r}")
        return list(ALL_JOB_COLUMNS)
    picked = list(columns)
    unknown = [c for c in picked if c not in ALL_JOB_COLUMNS]
    if unknown:
        raise ValueError(f"unknown jobs_frame column(s) {unknown}; the columns are "
                         f"{', '.join(ALL_JOB_COLUMNS)}")
    return picked


def last_error(job: JobBase) -> str | None:
    """The newest failed attempt in one line: its traceback's last line (``KeyError:
    'price'``), else the failure reason; None for a job that never failed."""
    traces = job.stacktrace
    if traces:
        lines = [ln for ln in traces[-1].splitlines() if ln.strip()]
        if lines:
            return lines[-1].strip()
    if job.failed_reason:
        etype = job._record.error_type
        return f"{etype}: {job.failed_reason}" if etype else job.failed_reason
    return None


def jobs_frame(jobs: Iterable[JobBase],
               columns: str | Sequence[str] | None = None) -> pd.DataFrame:
    """One row per job, indexed by job id: the concise ``JOB_COLUMNS`` by default,
    ``columns="all"`` for every column, or a list of names (see the module docstring)."""
    picked = _columns(columns)
    jobs = list(jobs)
    created = _utc([j.timestamp or None for j in jobs])
    processed = _utc([j.processed_on for j in jobs])
    finished = _utc([j.finished_on for j in jobs])
    df = pd.DataFrame({
        "queue": pd.Series([j.queue_name for j in jobs], dtype="object"),
        "name": pd.Series([j.name for j in jobs], dtype="object"),
        "state": pd.Categorical([j.state.value for j in jobs], categories=STATE_CATEGORIES),
        "priority": pd.Series([j.priority for j in jobs], dtype="int64"),
        "attempts_made": pd.Series([j.attempts_made for j in jobs], dtype="int64"),
        "attempts": pd.Series([j.opts.get("attempts", 1) for j in jobs], dtype="int64"),
        "progress": pd.Series([progress_percent(j.progress, j.state) for j in jobs],
                              dtype="float64"),
        "created": created,
        "processed": processed,
        "finished": finished,
        "wait_s": _seconds(processed, created),
        "run_s": _seconds(finished, processed),
        "failed_reason": pd.Series([j.failed_reason for j in jobs], dtype="object"),
        "error_type": pd.Series([j._record.error_type for j in jobs], dtype="object"),
        "last_error": pd.Series([last_error(j) for j in jobs], dtype="object"),
        "returnvalue": pd.Series([j.returnvalue for j in jobs], dtype="object"),
        "data": pd.Series([j.data for j in jobs], dtype="object"),
    }, columns=picked)
    df.index = pd.Index([j.id for j in jobs], dtype="object", name="job_id")
    return df


def history_frame(queue_name: str,
                  history: Iterable[tuple[int, int, int]]) -> pd.DataFrame:
    """Per-minute completed/failed counts of one queue (from ``Queue.get_history``)."""
    rows = list(history)
    completed = pd.Series([int(c) for _, c, _ in rows], dtype="int64")
    failed = pd.Series([int(f) for _, _, f in rows], dtype="int64")
    df = pd.DataFrame({
        "queue": pd.Series([queue_name] * len(rows), dtype="object"),
        "completed": completed,
        "failed": failed,
        "finished": completed + failed,
    }, columns=list(HISTORY_COLUMNS))
    df.index = pd.DatetimeIndex(_utc([m for m, _, _ in rows]), name="minute")
    return df


WORKER_COLUMNS: tuple[str, ...] = ("queue", "host", "pid", "mode", "concurrency", "active",
                                   "started_at", "last_heartbeat")


def workers_frame(workers: Iterable[tuple[str, WorkerInfo]]) -> pd.DataFrame:
    """One row per registered worker, indexed by worker ``id``: queue, host, mode (str),
    pid, concurrency, active (int64), started_at, last_heartbeat (``datetime64[ns, UTC]``).
    Takes (queue name, ``WorkerInfo``) pairs."""
    rows = list(workers)
    df = pd.DataFrame({
        "queue": pd.Series([q for q, _ in rows], dtype=object),
        "host": pd.Series([w.host for _, w in rows], dtype=object),
        "pid": pd.Series([w.pid for _, w in rows], dtype="int64"),
        "mode": pd.Series([w.mode for _, w in rows], dtype=object),
        "concurrency": pd.Series([w.concurrency for _, w in rows], dtype="int64"),
        "active": pd.Series([w.active for _, w in rows], dtype="int64"),
        "started_at": _utc([w.started_at for _, w in rows]),
        "last_heartbeat": _utc([w.last_heartbeat for _, w in rows]),
    }, columns=list(WORKER_COLUMNS))
    df.index = pd.Index([w.id for _, w in rows], name="id", dtype=object)
    return df


#: Columns whose values are job data or results: written as JSON text by ``export`` to
#: .csv and .parquet, every value (a string result too), so ``json.loads`` reads them back.
JSON_COLUMNS: tuple[str, ...] = ("data", "returnvalue")


def _json_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):  # None / NaN: empty
        return None
    return json.dumps(value, default=str, ensure_ascii=False)


def _jsonable_objects(df: pd.DataFrame) -> pd.DataFrame:
    """Job data and results (``JSON_COLUMNS``), and any other object column holding dicts
    or lists, become JSON text (csv would write Python reprs; parquet needs flat types)."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        if col in JSON_COLUMNS or out[col].map(lambda v: isinstance(v, (dict, list))).any():
            out[col] = out[col].map(_json_text)
    return out


def export(df: pd.DataFrame, path: str | Path, **kwargs: Any) -> Path:
    """Write ``df`` to ``path``, the format chosen by its suffix; returns the path.

    ``.csv`` (``DataFrame.to_csv``) and ``.parquet`` (needs ``pyarrow``) write job data,
    results and other dict/list columns as JSON text (``json.loads`` reads them back);
    ``.md``/``.markdown`` (a Markdown table, via ``tabulate``); ``.json`` (records, ISO
    dates). Extra keyword arguments go to the pandas writer.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"export() takes a pandas DataFrame, not {type(df).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        _jsonable_objects(df).to_csv(path, **kwargs)
    elif suffix == ".parquet":
        if importlib.util.find_spec("pyarrow") is None:
            raise NbqueueError(
                f"exporting to {path.name} needs pyarrow, which is not installed; "
                "run `pip install pyarrow` or export to .csv instead")
        _jsonable_objects(df).to_parquet(path, **kwargs)
    elif suffix in (".md", ".markdown"):
        if importlib.util.find_spec("tabulate") is None:
            raise MissingDependencyError("tabulate", f"exporting to {path.name}")
        path.write_text(df.to_markdown(**kwargs) + "\n", encoding="utf-8")
    elif suffix == ".json":
        df.to_json(path, orient="table", date_format="iso", default_handler=str, **kwargs)
    else:
        raise ValueError(f"cannot export to {path.name!r}: use a .csv, .parquet, .md or "
                         ".json path")
    return path


# -- the frames of Queue.map and JobBatch ----------------------------------------------------
def frame_chunks(df: pd.DataFrame, size: int, job_type: str) -> list[dict[str, Any]]:
    """The job data of ``Queue.map(df, chunksize=size)`` (see ``batch.map_items``)."""
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
    payload = job.payload if hasattr(job, "payload") else job
    ref = chunk_ref(payload)
    if ref is not None:
        return load_chunk(job, ref)
    if not isinstance(payload, Mapping) or "records" not in payload:
        raise TypeError("chunk_frame takes a job (or payload) made by Queue.map from a "
                        "DataFrame")
    return pd.DataFrame.from_records(payload["records"], index=payload.get("index"),
                                     columns=payload.get("columns"))




ERRORS = ("warn", "raise", "ignore")


def check_errors(errors: object) -> str:
    """``results_frame``'s ``errors``: "warn", "raise" or "ignore"."""
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
        if sys.version_info >= (3, 11):
            err.add_note(f"{len(bad)} of {len(values)} job(s) of this batch did not "
                         "complete; results_frame(errors='warn') returns the others")
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
    """``JobBatch.results_frame``: see there. ``values`` may hold
    ``arrowcodec.FrameTable``s: all frames are joined as Arrow (``concat_frames``)."""
    ok = [v for v in values if not isinstance(v, BaseException)]
    if ok and all(type(v) is FrameTable for v in ok):
        _incomplete(values, jobs, check_errors(errors), True)
        return concat_frames(ok)
    if any(type(v) is FrameTable for v in ok):
        values = [materialize(v) for v in values]
        ok = [v for v in values if not isinstance(v, BaseException)]
    frames = bool(ok) and all(isinstance(v, pd.DataFrame) for v in ok)
    series = bool(ok) and all(isinstance(v, pd.Series) for v in ok)
    records = bool(ok) and all(isinstance(v, list) and all(isinstance(x, dict) for x in v)
                               for v in ok)
    _incomplete(values, jobs, check_errors(errors), frames or series or records)
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
