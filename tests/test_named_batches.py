"""Issue 19 items 3-4: a map returns as its bytes are written; named batches survive the
kernel (a new process finds them, a re-run adds nothing and runs nothing again).

Real redis-server; "another kernel" is a real Python subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

import nbqueue
from nbqueue import Queue, Worker, chunk_frame
from nbqueue.dataplane import BatchReused, add_frame_map
from nbqueue.errors import BatchNotFoundError, InvalidOptionError
from nbqueue.protocol import Batch, _step_sync
from tests.test_artifacts import sales

ROOT = Path(__file__).resolve().parent.parent


def _jobs(r: redis.Redis, queue: str) -> list[str]:
    return sorted(k.split(":job:")[1] for k in r.scan_iter(f"nbq:{{{queue}}}:job:*"))


def test_the_same_map_again_returns_the_same_jobs_and_runs_nothing_twice(conn: Any,
                                                                          r: Any) -> None:
    q = Queue("named", conn)
    df = sales(60)
    first = q.map(df, chunksize=20, name="sales-q1")
    assert first.name == "sales-q1" and len(first) == 3
    assert [j.id.rsplit(":", 1)[0] for j in first] == [f"sales-q1:{k}" for k in range(3)]
    runs: list[str] = []
    lock = threading.Lock()

    def proc(job: Any) -> pd.Series:
        with lock:
            runs.append(job.id)
        return chunk_frame(job)["price"].groupby(level=0).sum()

    with Worker(q.name, proc, conn, concurrency=2):
        first.wait(timeout=30, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no BatchReused: same data
            again = q.map(df, chunksize=20, name="sales-q1")
        assert [j.id for j in again] == [j.id for j in first]
        assert [j.state.value for j in again] == ["completed"] * 3
        assert len(_jobs(r, q.name)) == 3
        total = pd.concat(again.results(timeout=10))
    assert sorted(runs) == sorted(j.id for j in first)  # each chunk ran once
    pd.testing.assert_series_equal(total, df["price"].groupby(level=0).sum())


def test_a_new_process_finds_the_batch_and_its_rerun_adds_nothing(conn: Any, r: Any,
                                                                  redis_url: str) -> None:
    q = Queue("kernel", conn)
    batch = q.map(sales(50), chunksize=10, name="nightly")
    with Worker(q.name, lambda job: len(chunk_frame(job)), conn):
        batch.wait(timeout=30, progress=False)
    script = textwrap.dedent(f"""
        import json, nbqueue
        from tests.test_artifacts import sales
        q = nbqueue.Queue("kernel", nbqueue.connect({redis_url!r}))
        found = q.get_batch("nightly")           # "after a kernel restart"
        rerun = q.map(sales(50), chunksize=10, name="nightly")  # the same cell, run again
        print(json.dumps({{"found": [j.id for j in found], "name": found.name,
                          "rerun": [j.id for j in rerun],
                          "results": found.results(timeout=10)}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    ids = [j.id for j in batch]
    assert got["found"] == ids and got["rerun"] == ids and got["name"] == "nightly"
    assert got["results"] == [10] * 5
    assert len(_jobs(r, q.name)) == 5


def test_a_changed_chunk_gets_a_new_job_and_the_old_one_remains(conn: Any, r: Any) -> None:
    q = Queue("changed", conn)
    df = sales(30)
    before = q.map(df, chunksize=10, name="b")
    changed = df.copy()
    changed.iloc[15, changed.columns.get_loc("price")] = -1.0  # in chunk 1
    with pytest.warns(BatchReused, match=r"1 chunk\(s\) changed.*the 1 job\(s\) of the "
                                         r"old chunks remain"):
        after = q.map(changed, chunksize=10, name="b")
    assert after[0].id == before[0].id and after[2].id == before[2].id
    assert after[1].id != before[1].id and after[1].id.startswith("b:1:")
    assert len(_jobs(r, q.name)) == 4  # the old chunk-1 job is still there
    assert [j.id for j in q.get_batch("b")] == [j.id for j in after]
    pd.testing.assert_frame_equal(chunk_frame(after[1]), changed.iloc[10:20])


def test_named_map_of_data_dicts(conn: Any) -> None:
    q = Queue("named-dicts", conn)
    items = [{"type": "t", "payload": {"x": i}} for i in range(5)]
    a = q.map(items, name="d")
    b = q.map(items, name="d")
    assert [j.id for j in a] == [j.id for j in b] and len({j.id for j in a}) == 5
    assert [j.payload for j in q.get_batch("d")] == [{"x": i} for i in range(5)]
    chunked = q.map(items, chunksize=2, name="dc")
    assert [len(j.payload["items"]) for j in chunked] == [2, 2, 1]


def test_get_batch_bad_input(conn: Any, r: Any) -> None:
    q = Queue("nob", conn)
    q.map([{"type": "t"}], name="exists")
    with pytest.raises(BatchNotFoundError, match=r"no batch named 'missing'.*'exists'"):
        q.get_batch("missing")
    for bad in ("", "has space", "{brace}", "x" * 101):
        with pytest.raises(InvalidOptionError, match="batch name"):
            q.get_batch(bad)
        with pytest.raises(InvalidOptionError, match="batch name"):
            q.map([{"type": "t"}], name=bad)
    with pytest.raises(InvalidOptionError, match="batch name must be a str"):
        q.map([{"type": "t"}], name=3)  # type: ignore[arg-type]
    assert len(_jobs(r, q.name)) == 1
    assert nbqueue.queue_manager is not None


def test_obliterate_forgets_the_batches(conn: Any, r: Any) -> None:
    q = Queue("oblb", conn)
    q.map(sales(10), chunksize=5, name="gone")
    q.obliterate(force=True)
    # (add tokens expire by themselves: obliterate.lua does not scan for them)
    assert [k for k in r.scan_iter("nbq:{oblb}:*") if ":add:" not in k] == []
    with pytest.raises(BatchNotFoundError):
        q.get_batch("gone")


def test_batch_magic_and_manager(conn: Any, redis_url: str, monkeypatch: Any) -> None:
    from IPython.core.error import UsageError
    from IPython.testing.globalipapp import get_ipython

    monkeypatch.setattr(nbqueue, "queue_manager", nbqueue.QueueManager(redis_url))
    nbqueue.queue_manager.get_queue("mq")
    nbqueue.queue_manager.map("mq", [{"type": "t", "payload": 1}], name="m1")
    got = nbqueue.queue_manager.get_batch("mq", "m1")
    assert got.name == "m1" and len(got) == 1
    ip = get_ipython()
    ip.run_line_magic("load_ext", "nbqueue")
    batch = ip.run_line_magic("nbqueue", "batch mq m1")
    assert batch.name == "m1" and [j.id for j in batch] == [j.id for j in got]
    with pytest.raises(UsageError, match="no batch named 'nope'"):
        ip.run_line_magic("nbqueue", "batch mq nope")


# -- a map returns as its bytes are written; workers start on the first chunk -----------------
def test_the_first_chunk_is_added_before_the_later_ones_are_encoded(conn: Any,
                                                                    r: Any) -> None:
    """Drive the map's op step by step against the real server: the first chunk's job
    exists (a worker can take it) when the op has not yet encoded the second chunk."""
    q = Queue("order", conn)
    df = sales(400)
    encoded: list[int] = []
    import nbqueue.arrowcodec as codec

    real = codec._ipc

    def counting(table: Any) -> bytes:
        encoded.append(table.num_rows)
        return real(table)

    codec._ipc = counting  # type: ignore[assignment]
    try:
        op = add_frame_map(q._ops, "redis", df, 100, "dataframe_chunk", {}, None)
        client = conn.sync()
        step = next(op)
        adds_seen = 0
        while True:
            is_add = isinstance(step, Batch) and any(c.script == "add" for c in step.calls)
            reply = _step_sync(client, step)
            if is_add:
                adds_seen += 1
                if adds_seen == 1:
                    assert _jobs(r, q.name) == ["1"] and len(encoded) == 1
            try:
                step = op.send(reply)
            except StopIteration as stop:
                records = stop.value
                break
    finally:
        codec._ipc = real  # type: ignore[assignment]
    assert [rec.id for rec in records] == ["1", "2", "3", "4"] and len(encoded) == 4
    assert not list(r.scan_iter("nbq:{order}:stage:*"))  # every staged chunk adopted
    assert sorted(r.scan_iter("nbq:{order}:art:*")) == [f"nbq:{{order}}:art:{i}"
                                                        for i in range(1, 5)]


def test_a_big_map_has_no_size_error_and_no_warning(conn: Any) -> None:
    q = Queue("big", conn)
    df = sales(200_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = q.map(df, chunksize=50_000)  # 4 chunks of ~3 MB each
    assert len(batch) == 4
    pd.testing.assert_frame_equal(chunk_frame(batch[3]), df.iloc[150_000:])


def test_aio_named_batch(redis_url: str) -> None:
    import asyncio

    from nbqueue import aio

    async def main() -> tuple[list[str], list[str], str | None]:
        mgr = aio.QueueManager(redis_url)
        mgr.get_queue("aionamed")
        a = await mgr.map("aionamed", sales(20), chunksize=10, name="an")
        b = await mgr.get_batch("aionamed", "an")
        mgr.close()
        return [j.id for j in a], [j.id for j in b], b.name

    a, b, name = asyncio.run(main())
    assert a == b and len(a) == 2 and name == "an"
