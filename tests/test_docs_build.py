"""The documentation site builds with warnings as errors (`mkdocs build --strict`): every page
of the nav exists, every internal link and anchor resolves, and the API reference's
docstrings render (mkdocstrings imports the package, so a broken public name fails here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python]")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    api = (site / "reference" / "nbqueue" / "index.html").read_text()
    for anchor in ("nbqueue.Queue.add", "nbqueue.Queue.map", "nbqueue.Job.result",
                   "nbqueue.JobBatch.results_frame", "nbqueue.connect"):
        assert f'id="{anchor}"' in api, anchor
