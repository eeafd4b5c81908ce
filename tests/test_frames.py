"""DataFrames of queues, jobs and history: stable columns, dtypes, and export."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

import nbqueue
from nbqueue import Queue, Worker
from nbqueue.errors import NbqueueError
from nbqueue.frames import (
    ALL_JOB_COLUMNS,
    HISTORY_COLUMNS,
    JOB_COLUMNS,
    METRICS_COLUMNS,
    history_frame,
    jobs_frame,
    metrics_frame,
)
from nbqueue.types import QueueMetrics


def test_empty_inputs_keep_columns_and_dtypes() -> None:
    m = metrics_frame([])
    assert list(m.columns) == list(METRICS_COLUMNS) and m.index.name == "queue"
    assert m["paused"].dtype == bool and m["waiting"].dtype == "int64"
    j = jobs_frame([])
    assert list(j.columns) == list(JOB_COLUMNS) and j.index.name == "job_id"
    assert isinstance(j["state"].dtype, pd.CategoricalDtype)
    assert str(j["created"].dtype) == "datetime64[ns, UTC]"
    assert j["run_s"].dtype == "float64" and j["progress"].dtype == "float64"
    a = jobs_frame([], columns="all")
    assert list(a.columns) == list(ALL_JOB_COLUMNS)
    assert str(a["finished"].dtype) == "datetime64[ns, UTC]"
    assert len(JOB_COLUMNS) <= 9  # concise by default (issue 14: 16 columns were ~1,700 px)
    with pytest.raises(ValueError, match="unknown jobs_frame column"):
        jobs_frame([], columns=["nope"])
    with pytest.raises(ValueError, match="'all'"):
        jobs_frame([], columns="everything")
    h = history_frame("q", [])
    assert list(h.columns) == list(HISTORY_COLUMNS) and h.index.name == "minute"
    assert str(h.index.dtype) == "datetime64[ns, UTC]"


def test_metrics_frame_rows() -> None:
    df = metrics_frame([QueueMetrics("a", 1, 2, 3, 4, 5, True, 8),
                        QueueMetrics("b", 0, 0, 0, 0, 0, False, 0)])
    assert df.loc["a", "failed"] == 4 and bool(df.loc["a", "paused"]) is True
    assert df.loc["b"].tolist() == [0, 0, 0, 0, 0, False, 0, 0]


def test_jobs_frame_from_a_real_queue(conn) -> None:
    q = Queue("frames", conn)
    assert list(q.jobs_frame().columns) == list(JOB_COLUMNS)  # empty queue, same columns
    q.add({"type": "ok", "payload": {"x": 1}}, job_id="job-ok")
    q.add({"type": "bad", "payload": {}}, job_id="job-bad", attempts=1)
    q.add({"type": "later", "payload": {}}, job_id="job-later", delay=60_000)

    def proc(job):
        job.update_progress(50)
        if job.name == "bad":
            raise ValueError("boom")
        return {"got": job.payload["x"]}

    with Worker("frames", proc, conn, dead_letter=False):
        q.get_job("job-ok").result(timeout=20)
        deadline = time.monotonic() + 20
        while q.get_job("job-bad").get_state() != "failed" and time.monotonic() < deadline:
            time.sleep(0.05)
    df = q.jobs_frame(columns="all")
    assert set(df.index) == {"job-ok", "job-bad", "job-later"}
    ok, bad, later = df.loc["job-ok"], df.loc["job-bad"], df.loc["job-later"]
    assert ok["state"] == "completed" and ok["returnvalue"] == {"got": 1}
    assert ok["progress"] == 100.0  # percent, as everywhere; a completed job is done
    assert bad["progress"] == pytest.approx(50.0)
    assert ok["created"] <= ok["processed"] <= ok["finished"]
    assert ok["created"].tzinfo is not None
    assert ok["run_s"] >= 0 and ok["wait_s"] >= 0
    assert ok["run_s"] == pytest.approx(
        (ok["finished"] - ok["processed"]).total_seconds(), abs=0.001)
    assert bad["state"] == "failed" and "boom" in bad["failed_reason"]
    assert bad["error_type"] == "ValueError"
    assert later["state"] == "delayed" and pd.isna(later["processed"])
    assert pd.isna(later["run_s"])
    assert df["state"].cat.categories.tolist()[:5] == ["waiting", "active", "delayed",
                                                        "completed", "failed"]
    only_failed = q.jobs_frame("failed")
    assert list(only_failed.index) == ["job-bad"]
    assert list(only_failed.columns) == list(JOB_COLUMNS)
    assert list(q.jobs_frame(columns=["state", "run_s"]).columns) == ["state", "run_s"]


def test_jobs_frame_limit_is_a_total(conn) -> None:
    """limit=10 returned 18 rows (10 per state) before; it is a total now."""
    q = Queue("frames-limit", conn)
    q.add_bulk([{"type": "t", "payload": {"i": i}} for i in range(8)])
    q.add_bulk([{"type": "t", "payload": {"i": i}} for i in range(8)], delay=60_000)
    assert len(q.jobs_frame(limit=10)) == 10
    assert len(q.jobs_frame(limit=0)) == 16
    assert (q.jobs_frame(limit=10)["state"] == "waiting").sum() == 8  # run order first


def test_history_and_manager_frames(conn) -> None:
    mgr = nbqueue.QueueManager(conn)
    q = mgr.get_queue("hist")
    q.add({"type": "t", "payload": {}})
    with Worker("hist", lambda job: 1, conn):
        q.add({"type": "t", "payload": {}}).result(timeout=20)
    h = q.metrics_history_frame(5)
    assert len(h) == 5 and h["completed"].sum() >= 1
    assert (h["finished"] == h["completed"] + h["failed"]).all()
    assert h.index.is_monotonic_increasing
    m = mgr.metrics_frame()
    assert list(m.index) == ["hist"] and m.loc["hist", "completed"] >= 1
    mgr.close()


def test_export_by_suffix(tmp_path: Path) -> None:
    df = metrics_frame([QueueMetrics("a", 1, 2, 3, 4, 5, False, 8)])
    csv = nbqueue.export(df, tmp_path / "m.csv")
    assert pd.read_csv(csv, index_col="queue").loc["a", "failed"] == 4
    md = nbqueue.export(df, tmp_path / "m.md").read_text()
    assert "| queue" in md and "| a " in md
    js = nbqueue.export(jobs_frame([]), tmp_path / "j.json")
    assert js.exists()
    with pytest.raises(ValueError, match=r"\.csv, \.parquet"):
        nbqueue.export(df, tmp_path / "m.xlsx")
    with pytest.raises(TypeError):
        nbqueue.export([1, 2], tmp_path / "m.csv")


def test_export_parquet(tmp_path: Path) -> None:
    df = metrics_frame([QueueMetrics("a", 1, 2, 3, 4, 5, False, 8)])
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(NbqueueError, match="pyarrow"):
            nbqueue.export(df, tmp_path / "m.parquet")
        assert not (tmp_path / "m.parquet").exists()
    else:
        path = nbqueue.export(df, tmp_path / "m.parquet")
        assert pd.read_parquet(path).loc["a", "failed"] == 4


def _echo(job):  # returns what the job asks for: a dict, a str, a list
    return job.data["payload"]["give"]


def test_csv_export_writes_data_and_results_as_json(conn, tmp_path: Path) -> None:
    import json

    q = Queue("csvq", connection=conn)
    gives = [{"sum": 3, "tags": ["a", "b"]}, "plain text, with a comma", [1, 2.5, None]]
    jobs = q.add_bulk([{"type": "t", "payload": {"give": g, "n": i}}
                       for i, g in enumerate(gives)])
    with Worker("csvq", _echo, connection=conn):
        for j in jobs:
            j.result(timeout=30)
    df = q.jobs_frame("completed", columns="all")
    back = pd.read_csv(nbqueue.export(df, tmp_path / "jobs.csv"), index_col="job_id")
    for j, g in zip(jobs, gives):
        row = back.loc[int(j.id)]
        assert json.loads(row["returnvalue"]) == g  # a str result is JSON too: "\"...\""
        assert json.loads(row["data"]) == {"type": "t", "payload": {"give": g, "n": int(j.id) - 1}}
    assert "{'sum'" not in (tmp_path / "jobs.csv").read_text()  # no Python reprs


# -- issue 19: frame results, and what results_frame says about failed chunks ---------------
def _chunk_stats(job):
    from nbqueue import chunk_frame

    part = chunk_frame(job)
    if (part["units"] == 13).any():
        raise ValueError("unlucky units in this chunk")
    return part.assign(revenue=part["units"] * part["price"])


def test_results_frame_concatenates_frame_results_with_dtypes_kept(conn) -> None:
    from tests.test_artifacts import sales

    q = Queue("rframes", conn)
    df = sales(90).assign(units=pd.array(range(100, 190), dtype="Int64"))
    batch = q.map(df, chunksize=30)
    with Worker(q.name, _chunk_stats, conn, concurrency=2, mode="process"):
        frame = batch.results_frame(timeout=60)
    expected = df.assign(revenue=df["units"] * df["price"])
    pd.testing.assert_frame_equal(frame, expected, check_index_type=True)
    assert str(frame["when"].dtype) == "datetime64[ns, Europe/Paris]" or \
        frame["when"].dt.tz is not None
    assert isinstance(frame["region"].dtype, pd.CategoricalDtype)
    assert str(frame["units"].dtype) == "Int64"


def test_results_frame_errors_warn_raise_ignore(conn) -> None:
    import warnings

    from nbqueue import IncompleteResultsWarning, InvalidOptionError, JobFailedError
    from tests.test_artifacts import sales

    q = Queue("rferr", conn)
    df = sales(40).assign(units=pd.array(range(40), dtype="Int64"))  # 13 is in chunk 1
    batch = q.map(df, chunksize=10, attempts=1)
    with Worker(q.name, _chunk_stats, conn, concurrency=2, dead_letter=False):
        batch.wait(timeout=30, progress=False)
    bad = batch[1].id
    with pytest.warns(IncompleteResultsWarning,
                      match=rf"1 of 4 job\(s\) did not complete.*job {bad} failed "
                            r"\(ValueError: unlucky units"):
        frame = batch.results_frame()
    assert len(frame) == 30 and 13 not in set(frame["units"])
    with pytest.raises(JobFailedError, match="unlucky units"):
        batch.results_frame(errors="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(batch.results_frame(errors="ignore")) == 30
    with pytest.raises(InvalidOptionError, match="errors must be"):
        batch.results_frame(errors="skip")
    q.remove(batch[3].id)  # a missing job is named too (a batch that had not read it)
    fresh = nbqueue.JobBatch(list(batch))
    with pytest.warns(IncompleteResultsWarning, match=rf"job {batch[3].id} is gone"):
        assert len(fresh.results_frame()) == 20


def _frames_cases() -> dict[str, list[pd.DataFrame]]:
    df = pd.DataFrame({"a": range(10), "s": list("abcdefghij"),
                       "t": pd.date_range("2024-01-01", periods=10, tz="Europe/Paris"),
                       "n": pd.array([1, None] * 5, dtype="Int64")})
    stepped = df.copy()
    stepped.index = pd.RangeIndex(0, 20, 2, name="k")
    cat = df.assign(c=pd.Categorical(list("xyxyxyxyxy")))
    return {
        "contiguous ranges": [df.iloc[:5], df.iloc[5:]],
        "repeated ranges": [df.iloc[:5].reset_index(drop=True),
                            df.iloc[5:].reset_index(drop=True)],
        "named index column": [df.set_index("s").iloc[:5], df.set_index("s").iloc[5:]],
        "stepped named range": [stepped.iloc[:5], stepped.iloc[5:]],
        "one frame": [df],
        "categorical (frame by frame)": [cat.iloc[:5], cat.iloc[5:]],
        "types differ (frame by frame)": [df.iloc[:5], df.iloc[5:].astype({"a": "float64"})],
        "columns differ (frame by frame)": [df.iloc[:5], df.iloc[5:][["s", "a", "t", "n"]]],
    }


@pytest.mark.parametrize("case", list(_frames_cases()))
def test_frame_results_joined_as_arrow_equal_pd_concat(case: str) -> None:
    """results_frame joins DataFrame results on the Arrow side and converts once
    (arrowcodec.concat_frames): the frame equals pd.concat of the decoded frames, index
    type included, and cases it cannot join exactly go frame by frame."""
    from nbqueue import arrowcodec

    frames = _frames_cases()[case]
    tables = [arrowcodec.decode_deferred(arrowcodec.encode(f).data) for f in frames]
    assert all(isinstance(t, arrowcodec.FrameTable) for t in tables)
    got = arrowcodec.concat_frames(tables)
    want = pd.concat(frames)
    pd.testing.assert_frame_equal(got, want, check_index_type=True)
    assert type(got.index) is type(want.index)
    joined = arrowcodec._concat_tables([t.table for t in tables]) is not None
    assert joined == ("frame by frame" not in case)
