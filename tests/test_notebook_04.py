"""Notebook 04 (the DataFrame pipeline) in a real kernel, on the embedded default server:
Arrow chunks and frame results (dtypes kept), a named batch, a kernel restart simulated by
running the map cell again (issue 19 item 8), a fixed chunk re-run alone, a fan-in of frames,
results compared with pandas."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_notebooks import embedded_env, run_notebook, text_of  # noqa: F401

pytestmark = pytest.mark.notebook


def test_04_dataframe_pipeline(embedded_env: dict[str, str],  # noqa: F811
                               tmp_path: Path) -> None:
    nb = run_notebook("04-dataframe-pipeline.ipynb", embedded_env, tmp_path)
    out = text_of(nb)
    assert "ERROR" not in out, out[-3000:]
    assert "100,000 rows, 20 chunks of 5,000" in out
    assert "20 jobs in batch 'sales-2026'; the first: sales-2026:0:" in out
    assert "20/20 done, 1 failed" in out  # the live progress bar's last state
    assert "chunks: 20, failed: 1" in out
    assert "chunk 2 (rows 10000..14999) failed: negative price in rows [112345]" in out
    # the failing chunk's traceback (from the process worker) and its captured print, where
    # chunk_frame gave the chunk's dtypes exactly
    assert "Traceback (most recent call last)" in out and "in chunk_stats" in out
    assert ("log: ['chunk 2: 5000 rows; day datetime64[us, Europe/Paris], city category, "
            "qty Int64']") in out
    assert "chunk 7: 5000 rows" not in out  # prints went to the jobs' logs, not the cells
    # frame results concatenated with their dtypes; the failed chunk named in a warning
    assert ("76 rows from 19 chunks; category {'orders': 'Int64', 'units': 'Int64', "
            "'revenue': 'Float64'}") in out
    assert "IncompleteResultsWarning: results_frame: 1 of 20 job(s) did not complete" in out
    # the kernel restart: the same cell finds the same jobs, adds and runs nothing
    assert "same jobs: True" in out and "jobs in the queue: 20" in out
    assert "finished already: 20 of 20" in out and "times chunk 0 ran: 1" in out
    # the fixed row: its chunk alone gets a new job
    assert "new jobs: ['sales-2026:2:" in out
    assert "BatchReused: batch 'sales-2026' of queue 'chunks' was mapped before" in out
    assert "chunks: 20, failed: 0" in out
    assert "results_frame matches pandas: True" in out
    assert "fan-in matches pandas: True" in out
    assert "dtypes: {'orders': 'Int64', 'units': 'Int64', 'revenue': 'Float64'}" in out
    assert "cancelled: 3" in out and out.count("JobFailedError: cancelled") == 3
