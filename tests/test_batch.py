"""Queue.map, JobBatch (wait with progress, results, as_completed, frames, failed, retry)."""

from __future__ import annotations

import asyncio
import io
import threading

import pandas as pd
import pytest

import nbqueue
from nbqueue import (
    InvalidOptionError,
    JobBatch,
    JobFailedError,
    JobNotFoundError,
    Queue,
    QueueManager,
    Worker,
    aio,
    chunk_frame,
)
from nbqueue.batch import map_items
from nbqueue.display import Progress


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "a": range(n),
        "price": [float(i) / 2 for i in range(n)],
        "when": pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC"),
        "tag": ["x" if i % 2 else None for i in range(n)],
    }, index=pd.RangeIndex(100, 100 + n, name="row"))


def test_add_bulk_returns_a_batch_that_is_still_a_list(conn) -> None:
    q = Queue("bl", conn)
    jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(5)])
    assert isinstance(jobs, JobBatch) and isinstance(jobs, list)
    assert len(jobs) == 5 and [j.payload for j in jobs] == list(range(5))
    assert jobs[0].id == "1" and [j.id for j in jobs[1:3]] == ["2", "3"]
    assert jobs == list(jobs)


def test_map_dataframe_chunks_payload_and_results_frame(conn) -> None:
    q = Queue("dfm", conn)
    df = _frame(25)
    batch = q.map(df, chunksize=10, priority="high")
    assert len(batch) == 3
    payloads = [j.payload for j in batch]
    assert [(p["chunk"], p["start"], p["stop"]) for p in payloads] == [
        (0, 0, 10), (1, 10, 20), (2, 20, 25)]
    assert batch[0].name == "dataframe_chunk" and batch[0].priority == 2
    # the chunk travels as Arrow (a reference in the payload), and comes back exactly
    assert payloads[0]["rows"] == 10 and set(payloads[0]["frame"]) == {"$nbqueue.artifact"}
    back = chunk_frame(batch[2])
    pd.testing.assert_frame_equal(back, df.iloc[20:25], check_index_type=True)

    def proc(job):
        part = chunk_frame(job)
        return [{"row": int(i), "double": int(a) * 2} for i, a in zip(part.index, part["a"])]

    with Worker("dfm", proc, conn, concurrency=2):
        frame = batch.results_frame(timeout=30)
    assert list(frame.columns) == ["row", "double"]
    assert list(frame["row"]) == list(range(100, 125))
    assert list(frame["double"]) == [2 * i for i in range(25)]


def test_map_dicts_one_job_each_or_chunked(conn) -> None:
    q = Queue("dm", conn)
    items = [{"type": "sq", "payload": {"x": i}} for i in range(7)]
    one_each = q.map(items)
    assert [j.payload for j in one_each] == [{"x": i} for i in range(7)]
    chunked = q.map(items, chunksize=3, job_type="sq_chunk")
    assert [j.name for j in chunked] == ["sq_chunk"] * 3
    assert [len(j.payload["items"]) for j in chunked] == [3, 3, 1]
    assert chunked[2].payload["items"][0] == items[6] and chunked[2].payload["start"] == 6

    def proc(job):
        if job.name == "sq_chunk":
            return [{"x": d["payload"]["x"], "sq": d["payload"]["x"] ** 2}
                    for d in job.payload["items"]]
        return {"sq": job.payload["x"] ** 2}

    with Worker("dm", proc, conn, concurrency=3):
        assert [r["sq"] for r in one_each.results(timeout=30)] == [i * i for i in range(7)]
        frame = one_each.results_frame()
        assert list(frame.index) == [j.id for j in one_each]
        assert list(frame["sq"]) == [i * i for i in range(7)]
        assert set(frame["state"]) == {"completed"} and frame["error"].isna().all()
        records = chunked.results_frame(timeout=30)
        assert list(records["sq"]) == [i * i for i in range(7)]


def test_map_bad_input_adds_nothing(conn, r) -> None:
    q = Queue("bad", conn)
    for size in (0, -1, 1.5, True):
        with pytest.raises(InvalidOptionError, match="chunksize"):
            q.map([{"type": "t"}], chunksize=size)
        with pytest.raises(InvalidOptionError, match="chunksize"):
            q.map(_frame(3), chunksize=size)
    with pytest.raises(TypeError, match="iterable of data dicts"):
        q.map({"type": "t"})
    with pytest.raises(TypeError, match="item 1 is a int"):
        q.map([{"type": "t"}, 5])
    with pytest.raises(InvalidOptionError, match="job_id"):
        q.map([{"type": "t"}], job_id="x")
    with pytest.raises(InvalidOptionError, match="unknown job option"):
        q.map([{"type": "t"}], colour="red")
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(InvalidOptionError, match="duplicate columns"):
        q.map(dup)
    # a bad item after the first bulk call: still nothing added
    many = [{"type": "t", "payload": i} for i in range(2500)] + [{"type": "t", "x": {1, 2}}]
    with pytest.raises(TypeError, match="set"):
        q.map(many)
    assert r.keys("nbq:{bad}:*") == []
    # empty input: a documented no-op, an empty batch that is done at once
    for empty in ([], pd.DataFrame({"a": []})):
        batch = q.map(empty, chunksize=10)
        assert isinstance(batch, JobBatch) and len(batch) == 0
        assert batch.wait(progress=False) is batch and batch.results() == []
        assert batch.results_frame().empty and batch.failed() == []
    assert r.keys("nbq:{bad}:*") == []


def test_wait_progress_failures_and_retry(conn) -> None:
    q = Queue("wp", conn)
    fail_once = {"on": True}

    def proc(job):
        if job.payload % 4 == 0 and fail_once["on"]:
            raise ValueError(f"bad item {job.payload}")
        return job.payload * 10

    batch = q.map([{"type": "t", "payload": i} for i in range(12)])
    out = io.StringIO()
    with Worker("wp", proc, conn, concurrency=4, dead_letter=False):
        batch._run(batch._wait(30, "text", out))  # wait(progress="text") on a stream
        text = out.getvalue()
        assert "12/12 done, 3 failed" in text and "jobs/s" in text
        assert text.endswith("\n") and "[" in text
        values = batch.results(return_exceptions=True)
        assert [type(v).__name__ for v in values].count("JobFailedError") == 3
        assert values[1] == 10 and isinstance(values[0], JobFailedError)
        assert values[0].reason == "bad item 0" and values[0].error_type == "ValueError"
        assert 'raise ValueError(f"bad item' in values[0].remote_traceback
        with pytest.raises(JobFailedError, match="bad item 0") as info:
            batch.results()
        assert "3 of 12 job(s)" in "".join(getattr(info.value, "__notes__", []))
        failed = batch.failed()
        assert [j.payload for j in failed] == [0, 4, 8]
        assert all(j.failed_reason.startswith("bad item") for j in failed)
        with pytest.warns(nbqueue.IncompleteResultsWarning,
                          match=r"3 of 12 job\(s\) did not complete and are rows with their "
                                r"error"):
            frame = batch.results_frame()
        assert list(frame["state"]).count("failed") == 3
        assert frame.loc[failed[0].id, "error"] == "bad item 0"
        assert frame.loc[failed[0].id, "error_type"] == "ValueError"
        fail_once["on"] = False
        assert batch.retry_failed() == 3
        assert batch.results(timeout=30) == [i * 10 for i in range(12)]
        assert batch.failed() == [] and batch.retry_failed() == 0


def test_wait_timeout_names_what_is_left(conn) -> None:
    q = Queue("wt", conn)
    batch = q.map([{"type": "t"} for _ in range(3)])
    with pytest.raises(TimeoutError, match="3 of 3 job"):
        batch.wait(timeout=0.3, progress=False)
    with pytest.raises(TimeoutError):
        batch.results(timeout=0.2)
    with pytest.raises(TimeoutError):
        list(batch.as_completed(timeout=0.2))


def test_progress_html_and_modes() -> None:
    bar = Progress(10, "html")
    text = bar.html(4, 1)
    assert "<progress value='4' max='10'" in text and "4/10 done, 1 failed" in text
    assert "ETA" in text and "jobs/s" in text
    assert Progress.pick(False) is None and Progress.pick("text") == "text"
    with pytest.raises(InvalidOptionError):
        Progress.pick("fancy")


def test_wait_in_a_notebook_updates_one_html_output(conn, monkeypatch) -> None:
    """In a kernel, wait() displays one HTML output and updates it in place."""
    shown: list[tuple[str, object]] = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj.data))

    def display(obj, display_id=False):
        shown.append(("display", obj.data))
        return Handle()

    import IPython.display

    monkeypatch.setattr(IPython.display, "display", display)
    monkeypatch.setattr("nbqueue.display._in_notebook", lambda: True)
    q = Queue("nbw", conn)
    batch = q.map([{"type": "t", "payload": i} for i in range(6)])
    with Worker("nbw", lambda job: job.payload, conn, concurrency=2):
        batch.wait(timeout=30)
    assert shown[0][0] == "display" and all(k == "update" for k, _ in shown[1:])
    assert "6/6 done, 0 failed" in str(shown[-1][1])


def test_as_completed_yields_each_job_once_as_it_ends(conn) -> None:
    q = Queue("ac", conn)
    gate = threading.Event()

    def proc(job):
        if job.payload == 0:
            gate.wait(20)
        return job.payload

    batch = q.map([{"type": "t", "payload": i} for i in range(5)])
    order = []
    with Worker("ac", proc, conn, concurrency=5):
        for job in batch.as_completed(timeout=30):
            order.append(job.payload)
            assert job.returnvalue == job.payload and job.state == "completed"
            if len(order) == 4:
                gate.set()
    assert sorted(order) == list(range(5)) and order[-1] == 0


def test_batch_sees_removed_jobs_and_many_jobs_with_few_round_trips(conn, r) -> None:
    q = Queue("many", conn)
    batch = q.map([{"type": "t", "payload": i} for i in range(3000)])
    assert len(batch) == 3000
    # kept a day, whatever their number (the queue's default keeps the newest 1000)
    assert r.hget(f"nbq:{{many}}:job:{batch[0].id}", "opts").count('"age_ms":86400000') == 2
    q.remove(batch[5].id)
    before = int(r.info("stats")["total_commands_processed"])
    with Worker("many", lambda job: job.payload, conn, concurrency=8, prefetch=50):
        values = batch.results(timeout=120, return_exceptions=True)
    assert isinstance(values[5], JobNotFoundError)
    assert values[:5] == list(range(5)) and values[6:] == list(range(6, 3000))
    # waiting reads the event stream, not every job per poll: the batch's own reads are a
    # small fraction of the worker's commands (the worker needs ~2-8 per job)
    used = int(r.info("stats")["total_commands_processed"]) - before
    assert used < 3000 * 12


def test_cancel_a_batch(conn) -> None:
    q = Queue("cx", conn)
    batch = q.map([{"type": "t", "payload": i} for i in range(5)])
    late = q.map([{"type": "t"}], delay=60_000)
    assert batch.cancel() == 5 and late.cancel() == 1
    values = batch.results(timeout=30, return_exceptions=True)
    assert all(isinstance(v, JobFailedError) and v.error_type == "cancelled" for v in values)
    assert batch.cancel() == 0  # all finished: a no-op
    assert [j.id for j in batch.failed()] == [j.id for j in batch]
    assert q.get_metrics().failed == 6 and q.get_metrics().total == 0


def test_cancel_a_batch_with_a_running_job(conn) -> None:
    q = Queue("cxa", conn)
    started = threading.Event()

    def proc(job):  # cooperative, as thread-mode code must be
        started.set()
        while not job.cancelled:
            threading.Event().wait(0.01)
        job.raise_if_cancelled()

    batch = q.map([{"type": "t", "payload": i} for i in range(4)])
    with Worker("cxa", proc, conn, concurrency=1):
        assert started.wait(30)
        assert batch.cancel() == 4  # 3 waiting ones at once, the running one via its worker
        values = batch.results(timeout=60, return_exceptions=True)
    assert [getattr(v, "error_type", None) for v in values] == ["cancelled"] * 4


def test_results_seen_while_waiting_survive_trimming(conn) -> None:
    """Results read as jobs were seen ending are kept by the batch: a job trimmed by
    retention afterwards (removed here) still has its result in results()."""
    q = Queue("ret", conn)
    batch = q.add_bulk([{"type": "t", "payload": i} for i in range(4)])
    with Worker("ret", lambda job: job.payload, conn, concurrency=2):
        batch.wait(timeout=30, progress=False)
    assert q.remove(batch[1].id)
    assert batch.results() == [0, 1, 2, 3]
    fresh = JobBatch(list(batch))  # a batch that never saw them end reads Redis
    assert isinstance(fresh.results(return_exceptions=True)[1], JobNotFoundError)


def test_manager_and_aio_map(conn) -> None:
    mgr = QueueManager(connection=conn)
    mgr.get_queue("mm")
    batch = mgr.map("mm", [{"type": "t", "payload": i} for i in range(4)], attempts=2)
    assert len(batch) == 4 and batch[0].opts["attempts"] == 2

    async def main():
        amgr = aio.QueueManager(connection=conn)
        amgr.get_queue("am")
        amgr.register_processor("am", _async_double)
        await amgr.start_worker("am", worker_concurrency=3)
        try:
            abatch = await amgr.map("am", [{"type": "t", "payload": i} for i in range(6)])
            assert isinstance(abatch, aio.JobBatch)
            assert await abatch.results(timeout=30) == [2 * i for i in range(6)]
            seen = [j.payload async for j in abatch.as_completed(timeout=30)]
            assert sorted(seen) == list(range(6))
            frame = await abatch.results_frame()
            assert list(frame["result"]) == [2 * i for i in range(6)]
            assert await abatch.failed() == [] and await abatch.retry_failed() == 0
            assert (await abatch.wait(progress=False)) is abatch
            bulk = await amgr.add_jobs("am", [{"type": "t", "payload": 9}])
            assert isinstance(bulk, aio.JobBatch)
            assert await bulk.results(timeout=30) == [18]
        finally:
            await amgr.aclose()
            await amgr.queue("am").close()

    asyncio.run(main())


async def _async_double(job):
    return job.payload * 2


def test_map_items_is_pure() -> None:
    assert map_items([], 5) == []
    assert map_items([{"a": 1}], job_type="x") == [{"a": 1, "type": "x"}]
    assert nbqueue.batch.DEFAULT_DF_CHUNK == 1000
    assert len(map_items(_frame(2500))) == 3


def test_enqueue_chunks_magic_with_a_dataframe(conn, monkeypatch) -> None:
    from IPython.core.error import UsageError
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "nbqueue")
    mgr = QueueManager(connection=conn)
    monkeypatch.setattr(nbqueue, "queue_manager", mgr)
    ip.user_ns["df"] = _frame(25)
    batch = ip.run_cell_magic("enqueue", "mag --chunks 10 --type part --name parts", "df")
    assert isinstance(batch, JobBatch) and ip.user_ns["parts"] is batch
    assert [j.name for j in batch] == ["part"] * 3
    assert [j.payload["stop"] for j in batch] == [10, 20, 25]
    assert "3 job(s) added to <b>mag</b>" in batch._repr_html_()
    # a DataFrame without --chunks is refused (pointing at --chunks); a list with it: map
    with pytest.raises(UsageError, match="--chunks"):
        ip.run_cell_magic("enqueue", "mag", "df")
    listed = ip.run_cell_magic("enqueue", "mag --chunks 2 --type it", "[{'v': i} for i in "
                               "range(5)]")
    assert [len(j.payload["items"]) for j in listed] == [2, 2, 1]
    assert listed[0].payload["items"][0] == {"type": "it", "payload": {"v": 0}}
    for line, cell, match in [("mag --chunks 0", "df", "--chunks must be >= 1"),
                              ("mag --chunks 5", "{'a': 1}", "not one dict"),
                              ("mag --chunks 5 --job-id x", "df", "job-id")]:
        with pytest.raises(UsageError, match=match):
            ip.run_cell_magic("enqueue", line, cell)
    ip.user_ns["empty"] = pd.DataFrame({"a": []})
    assert len(ip.run_cell_magic("enqueue", "mag --chunks 5", "empty")) == 0
    mgr.register_processor("mag", lambda job: len(chunk_frame(job)))
    mgr.start_worker("mag")
    try:
        assert ip.run_cell_magic("enqueue", "mag --chunks 10 --wait --timeout 30s",
                                 "df") == [10, 10, 5]
    finally:
        mgr.close()
