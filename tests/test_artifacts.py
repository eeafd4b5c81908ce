"""Issue 19 items 1-3: frames and arrays travel as Arrow, by reference, in every store.

Real redis-server (conftest), real worker threads/tasks/processes, a real file store
(tmp_path) and a real S3 API (moto's server as a subprocess on loopback, s3fs pointed at
it): no mock objects in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import nbqueue
from nbqueue import Queue, Worker, arrowcodec, chunk_frame
from nbqueue.artifacts import REF_KEY, resolve_store
from nbqueue.errors import (
    ArtifactError,
    MissingDependencyError,
    MissingStoreBackendError,
    StoreError,
)


def sales(n: int, start: int = 0) -> pd.DataFrame:
    """A frame with every dtype the issue names, and a named non-default index."""
    rng = np.random.default_rng(7)
    df = pd.DataFrame({
        "region": pd.Categorical(rng.choice(["north", "south", "east"], n),
                                 categories=["south", "north", "east"], ordered=True),
        "when": pd.date_range("2026-01-01", periods=n, freq="min", tz="Europe/Paris"),
        "units": pd.array([None if i % 7 == 0 else i for i in range(n)], dtype="Int64"),
        "sku": pd.array([f"s{i % 13}" if i % 5 else None for i in range(n)],
                        dtype="string"),
        "price": rng.random(n),
    }, index=pd.Index(range(start + 1000, start + 1000 + n), name="order_id"))
    return df[["sku", "when", "region", "units", "price"]]  # column order is kept too


# -- the codec (no Redis) -------------------------------------------------------------------
def test_codec_round_trip_is_exact() -> None:
    df = sales(50)
    back = arrowcodec.decode(arrowcodec.encode(df).data)
    pd.testing.assert_frame_equal(back, df, check_index_type=True, check_column_type=True)
    assert list(back.columns) == ["sku", "when", "region", "units", "price"]
    s = df.groupby("region", observed=True)["units"].sum().rename("total")
    pd.testing.assert_series_equal(arrowcodec.decode(arrowcodec.encode(s).data), s,
                                   check_index_type=True)
    for arr in (np.arange(24, dtype="int16").reshape(2, 3, 4), np.array([[1.5], [2.5]]),
                np.array(["ab", "c"]), np.array([True, False])):
        out = arrowcodec.decode(arrowcodec.encode(arr).data)
        assert out.dtype == arr.dtype and out.shape == arr.shape and (out == arr).all()


def test_frame_slices_are_exact_chunks() -> None:
    df = sales(25).reset_index(drop=True)  # a RangeIndex: each slice gets its own range
    for start, stop, enc in arrowcodec.frame_slices(df, 10):
        pd.testing.assert_frame_equal(arrowcodec.decode(enc.data), df.iloc[start:stop],
                                      check_index_type=True)


def test_untypable_object_column_names_the_column_and_the_fix() -> None:
    class Thing:
        pass

    df = pd.DataFrame({"ok": [1, 2], "blob": [Thing(), Thing()]})
    with pytest.raises(TypeError, match=r"column 'blob' \(dtype object, holding Thing\)"
                                        r".*astype\(str\)"):
        arrowcodec.encode(df)
    with pytest.raises(TypeError, match=r"column 'mixed'.*int, str"):
        arrowcodec.encode(pd.DataFrame({"mixed": pd.Series([1, "a"], dtype=object)}))
    with pytest.raises(TypeError, match="dtype object"):
        arrowcodec.encode(np.array([object()], dtype=object))


# -- stores: bad input ----------------------------------------------------------------------
def test_store_choice_and_its_errors(tmp_path: Path, monkeypatch: Any) -> None:
    assert resolve_store(None) == "redis" and resolve_store("REDIS") == "redis"
    monkeypatch.setenv("NBQUEUE_STORE", f"file://{tmp_path}/env")
    assert resolve_store(None) == f"file://{tmp_path}/env"
    with pytest.raises(MissingStoreBackendError, match=r"needs gcsfs.*pip install gcsfs") as e:
        resolve_store("gs://bucket/prefix")
    assert isinstance(e.value, MissingDependencyError) and e.value.package == "gcsfs"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"is not writable.*store='redis'"):
        resolve_store(f"file://{blocker}/under-a-file")
    with pytest.raises(StoreError, match="neither 'redis' nor a URL"):
        resolve_store("/just/a/path")


def test_connect_checks_the_store(redis_url: str, tmp_path: Path) -> None:
    conn = nbqueue.connect(redis_url, store=f"file://{tmp_path}/s")
    assert conn.store == f"file://{tmp_path}/s"
    (tmp_path / "f").write_text("")
    with pytest.raises(StoreError, match="not writable"):
        nbqueue.connect(redis_url, store=f"file://{tmp_path}/f/x")


# -- results in every worker mode -----------------------------------------------------------
def grouped(job: Any) -> Any:
    """A processor returning a frame, a Series or an array, as the job asks."""
    df = sales(40)
    kind = job.payload
    if kind == "frame":
        return df.iloc[5:15]
    if kind == "series":
        return df.groupby("region", observed=True)["price"].sum()
    return np.arange(12, dtype="float32").reshape(3, 4)


async def grouped_async(job: Any) -> Any:
    return grouped(job)


@pytest.mark.parametrize("mode", ["thread", "asyncio", "process"])
def test_frame_series_array_results_come_back_exactly(conn: Any, mode: str) -> None:
    q = Queue(f"res-{mode}", conn)
    proc = grouped_async if mode == "asyncio" else grouped
    jobs = [q.add({"type": "t", "payload": k}) for k in ("frame", "series", "array")]
    with Worker(q.name, proc, conn, concurrency=2, mode=mode):
        got = [j.result(timeout=60) for j in jobs]
    df = sales(40)
    pd.testing.assert_frame_equal(got[0], df.iloc[5:15], check_index_type=True)
    pd.testing.assert_series_equal(
        got[1], df.groupby("region", observed=True)["price"].sum(), check_index_type=True)
    assert got[2].dtype == np.float32 and got[2].shape == (3, 4)
    # the job holds a reference, the bytes live beside it in the queue's slot
    jobs[0].refresh()
    ref = jobs[0].returnvalue[REF_KEY]
    assert ref["kind"] == "DataFrame" and ref["rows"] == 10
    assert conn.sync().hexists(f"nbq:{{{q.name}}}:art:{jobs[0].id}", ref["sha256"])


def test_a_tampered_artifact_is_an_error_never_used(conn: Any, redis_url: str) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)  # bytes in, bytes out
    q = Queue("tamper", conn)
    job = q.add({"type": "t", "payload": "frame"})
    with Worker(q.name, grouped, conn):
        job.result(timeout=30)
    key = f"nbq:{{tamper}}:art:{job.id}"
    (field, data), = r.hgetall(key).items()
    r.hset(key, field, data.replace(b"north", b"NORTH"))
    with pytest.raises(ArtifactError, match="does not match its content hash"):
        job.result(timeout=5)
    r.delete(key)
    with pytest.raises(ArtifactError, match="is missing"):
        job.result(timeout=5)
    r.close()


def test_a_result_arrow_cannot_store_fails_the_job_naming_the_column(conn: Any) -> None:
    q = Queue("badres", conn)
    job = q.add({"type": "t", "payload": {}}, attempts=1)

    def proc(job: Any) -> pd.DataFrame:
        return pd.DataFrame({"obj": [object(), object()]})

    with Worker(q.name, proc, conn, dead_letter=False), \
            pytest.raises(nbqueue.JobFailedError, match="column 'obj'"):
        job.result(timeout=30)


def test_a_fan_in_gets_its_dependencies_frames(conn: Any) -> None:
    q = Queue("fanin-frames", conn)
    df = sales(40)
    parts = q.map(df, chunksize=10)

    def proc(job: Any) -> Any:
        if job.name == "combine":
            frames = job.dependency_results()  # {"queue:id": DataFrame}
            return pd.concat([frames[f"{q.name}:{j}"] for j in job.payload["order"]])
        return chunk_frame(job).assign(double=lambda f: f["units"] * 2)

    total = q.add({"type": "combine", "payload": {"order": [j.id for j in parts]}},
                  depends_on=parts)
    with Worker(q.name, proc, conn, concurrency=2):
        got = total.result(timeout=60)
    pd.testing.assert_frame_equal(got, df.assign(double=df["units"] * 2),
                                  check_index_type=True)


def test_a_map_of_an_untypable_frame_writes_nothing(conn: Any, r: Any, tmp_path: Path,
                                                    redis_url: str) -> None:
    class Thing:
        pass

    df = sales(30).assign(blob=[Thing()] * 30)
    for connection in (conn, nbqueue.connect(redis_url, store=f"file://{tmp_path}/s")):
        q = Queue("untypable", connection)
        with pytest.raises(TypeError, match=r"Queue.map's DataFrame: column 'blob'.*"
                                            r"df\['blob'\].astype\(str\)"):
            q.map(df, chunksize=10)
        with pytest.raises(nbqueue.InvalidOptionError, match="unknown job option"):
            q.map(sales(30), chunksize=10, colour="red")
    assert list(r.scan_iter("nbq:{untypable}:*")) == []
    assert list(tmp_path.rglob("*.arrow")) == []
