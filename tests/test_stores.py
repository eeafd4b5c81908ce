"""Issue 19 item 2: the fsspec stores (a real file store, a real S3 API: moto's server as a
subprocess on loopback, s3fs pointed at it; no mock objects in-process): round trip, and
artifacts die with their jobs (a count of what is left)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import nbqueue
from nbqueue import Queue, Worker, chunk_frame
from nbqueue.artifacts import REF_KEY
from tests.test_artifacts import sales


# -- stores: file:// and a real S3 API ------------------------------------------------------
def _artifact_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.arrow")]


def test_file_store_results_and_chunks_die_with_their_jobs(redis_url: str, r: Any,
                                                           tmp_path: Path) -> None:
    conn = nbqueue.connect(redis_url, store=f"file://{tmp_path}/store")
    q = Queue("fstore", conn)
    df = sales(30)
    batch = q.map(df, chunksize=10)
    assert len(_artifact_files(tmp_path)) == 3
    with Worker(q.name, lambda job: chunk_frame(job).iloc[:2], conn, concurrency=2):
        parts = batch.results(timeout=30)
    pd.testing.assert_frame_equal(pd.concat(parts), pd.concat(
        [df.iloc[0:2], df.iloc[10:12], df.iloc[20:22]]), check_index_type=True)
    assert len(_artifact_files(tmp_path)) == 6  # 3 chunks + 3 results
    assert q.remove(batch[0].id)
    assert len(_artifact_files(tmp_path)) == 4
    assert q.clean(0, 0, "completed") == 2
    assert _artifact_files(tmp_path) == []
    assert not [k for k in r.scan_iter("nbq:{fstore}:art*")]


def test_file_store_retention_files_swept_by_the_worker(redis_url: str, r: Any,
                                                        tmp_path: Path) -> None:
    conn = nbqueue.connect(redis_url, store=f"file://{tmp_path}/store")
    q = Queue("fret", conn)
    batch = q.map(sales(40), chunksize=10, remove_on_complete=True)
    with Worker(q.name, lambda job: chunk_frame(job).head(1), conn, concurrency=2,
                heartbeat_interval=200):
        batch.wait(timeout=30, progress=False)
        deadline = time.monotonic() + 10
        while _artifact_files(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert _artifact_files(tmp_path) == []  # 4 chunks and 4 results, all gone
    assert r.scard("nbq:{fret}:artgc") == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, a real HTTP server in its own process on loopback."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_s3_store_round_trip_and_cleanup(redis_url: str, s3_endpoint: str,
                                         monkeypatch: Any) -> None:
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # botocore and s3fs read it
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("nbq-test")
    conn = nbqueue.connect(redis_url, store="s3://nbq-test/runs")
    q = Queue("s3q", conn)
    df = sales(20)
    batch = q.map(df, chunksize=10)
    ref = batch[0].payload["frame"][REF_KEY]
    assert ref["url"].startswith("s3://nbq-test/runs/s3q/")
    with Worker(q.name, lambda job: chunk_frame(job).describe(), conn):
        parts = batch.results(timeout=60)
    pd.testing.assert_frame_equal(parts[1], df.iloc[10:20].describe())
    fs.invalidate_cache()
    assert len(fs.find("nbq-test/runs/s3q")) == 4
    q.obliterate(force=True)
    fs.invalidate_cache()
    assert fs.find("nbq-test/runs/s3q") == []


def _arts(r: Any, queue: str) -> int:
    return sum(1 for _ in r.scan_iter(f"nbq:{{{queue}}}:art:*")) + sum(
        1 for _ in r.scan_iter(f"nbq:{{{queue}}}:stage:*"))


def test_redis_store_artifacts_die_with_their_jobs(conn: Any, r: Any) -> None:
    """Retention, remove, clean, drain and obliterate: a count of what is left."""
    q = Queue("rdie", conn)
    df = sales(60)
    kept = q.map(df, chunksize=10)  # 6 jobs, each with its chunk
    assert _arts(r, q.name) == 6
    with Worker(q.name, lambda job: chunk_frame(job).head(2), conn, concurrency=2):
        kept.wait(timeout=30, progress=False)
        # retention: jobs removed as they complete take their chunk and result along
        gone = q.map(df, chunksize=10, remove_on_complete=True)
        gone.wait(timeout=30, progress=False)
    assert _arts(r, q.name) == 6  # the 6 kept jobs, each with chunk + result in one hash
    assert sum(r.hlen(k) for k in r.scan_iter("nbq:{rdie}:art:*")) == 12
    assert q.remove(kept[0].id) and _arts(r, q.name) == 5
    assert q.clean(0, 2, "completed") == 2 and _arts(r, q.name) == 3
    waiting = q.map(df, chunksize=20)  # 3 more, never run
    assert _arts(r, q.name) == 6 and len(waiting) == 3
    assert q.drain() == 3 and _arts(r, q.name) == 3
    q.obliterate(force=True)
    assert _arts(r, q.name) == 0


def test_a_store_failing_mid_map_then_a_named_rerun_adds_the_rest(redis_url: str, r: Any,
                                                                  tmp_path: Path,
                                                                  monkeypatch: Any) -> None:
    """Fault injection: the store's third write fails (as a full disk would)."""
    from nbqueue.artifacts import FsspecStore
    from nbqueue.errors import StoreError

    conn = nbqueue.connect(redis_url, store=f"file://{tmp_path}/s")
    q = Queue("midfail", conn)
    df = sales(50)
    real = FsspecStore.write
    calls = {"n": 0}

    def failing(self: FsspecStore, queue: str, sha: str, data: bytes) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise StoreError("could not write an artifact (injected: disk full); its job "
                             "was not added")
        return real(self, queue, sha, data)

    monkeypatch.setattr(FsspecStore, "write", failing)
    with pytest.raises(StoreError, match="disk full"):
        q.map(df, chunksize=10, name="mf")
    # chunk 0 went alone and was added; chunk 1's group failed: its file is deleted
    assert [k.split(":job:")[1].split(":")[1]
            for k in r.scan_iter("nbq:{midfail}:job:*")] == ["0"]
    assert len(_artifact_files(tmp_path)) == 1
    batch = q.map(df, chunksize=10, name="mf")  # the same cell again: the 4 missing added
    assert len(batch) == 5 and len(list(r.scan_iter("nbq:{midfail}:job:*"))) == 5
    assert len(_artifact_files(tmp_path)) == 5
    pd.testing.assert_frame_equal(chunk_frame(batch[4]), df.iloc[40:50])
