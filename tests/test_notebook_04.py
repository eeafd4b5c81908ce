"""Notebook 04 (the DataFrame pipeline) in a real kernel, on the embedded default server."""

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
    assert "100,000 rows, 50 chunks of 2,000" in out
    assert "50 job(s) added to <b>chunks</b>" in out
    assert "50/50 done, 1 failed" in out  # the live progress bar's last state
    assert "chunks: 50, failed: 1" in out
    assert "report over 49 chunks:" in out
    assert "chunk 6 (rows 12000..13999) failed: negative price in rows [12345]" in out
    # the failing chunk's traceback (from the process worker) and its captured print
    assert "Traceback (most recent call last)" in out and "in chunk_stats" in out
    assert "log: ['chunk 6: 2000 rows, index 12000..13999']" in out
    assert "chunk 7: 2000 rows" not in out  # prints went to the jobs' logs, not the cells
    assert "cancelled: 3" in out and out.count("JobFailedError: cancelled") == 3
    assert "from 49 chunks; matches pandas: True" in out
