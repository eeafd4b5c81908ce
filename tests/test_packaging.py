"""The package as people install it: a complete sdist, a core install without the notebook
layer, and a README without placeholders."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_LAYER = ("pandas", "numpy", "IPython", "ipykernel", "ipywidgets", "anywidget",
                  "tabulate")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    res = subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out),
                          str(ROOT)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (path,) = out.glob("nbqueue-*.tar.gz")
    return path


def test_sdist_carries_the_tests_their_helpers_and_the_licence(sdist: Path,
                                                                tmp_path: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        tar.extractall(tmp_path, filter="data")
    for needed in ("LICENSE", "README.md", "pyproject.toml", "tests/conftest.py",
                   "tests/helpers.py", "tests/redisproc.py", "tests/reliability/conftest.py",
                   "tests/test_metrics.py", "nbqueue/scripts/metrics.lua",
                   "nbqueue/scripts/includes/common.lua", "nbqueue/notebook/static/dashboard.js",
                   "contrib/grafana/nbqueue.json", "contrib/prometheus/alerts.yml",
                   "notebooks/01-quickstart.ipynb", "binder/start", "mkdocs.yml", "docs/index.md",
                   "docs/reference/nbqueue.md"):
        assert needed in names, needed
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    root = next(tmp_path.iterdir())
    assert "MIT License" in (root / "LICENSE").read_text()
    pkg_info = (root / "PKG-INFO").read_text()
    assert "License-Expression: MIT" in pkg_info and "License-File: LICENSE" in pkg_info
    assert re.search(r"^Author: \S", pkg_info, re.M)
    assert "Classifier: Framework :: Jupyter" in pkg_info
    assert "Classifier: Typing :: Typed" in pkg_info
    assert "Provides-Extra: notebook" in pkg_info
    assert 'Requires-Dist: pandas>=2.0; extra == "notebook"' in pkg_info
    assert "OWNER" not in pkg_info
    # the unpacked test suite collects (conftest.py, helpers and redisproc are all there)
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "tests"], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r"\d+ tests collected", res.stdout)


def test_core_install_runs_workers_without_the_notebook_layer(redis_url: str, r) -> None:
    """``pip install nbqueue`` (no [notebook]): queues, thread and asyncio workers, the
    metrics collector work with pandas, IPython, ipywidgets... absent; the notebook
    features say which extra to install."""
    code = textwrap.dedent(f"""
        import sys
        for name in {NOTEBOOK_LAYER!r}:
            sys.modules[name] = None  # as if not installed: importing it fails
        import nbqueue
        from nbqueue import Queue, Worker
        from nbqueue.errors import MissingDependencyError
        from nbqueue.metrics import QueueCollector
        from prometheus_client import CollectorRegistry, generate_latest
        q = Queue("core_only", connection={redis_url!r})
        for mode in ("thread", "asyncio"):
            job = q.add({{"type": "t", "payload": 21}})
            with Worker("core_only", lambda j: j.data["payload"] * 2, connection={redis_url!r},
                        mode=mode):
                assert job.result(timeout=30) == 42
        reg = CollectorRegistry()
        reg.register(QueueCollector({redis_url!r}))
        assert b'nbqueue_jobs_finished_total{{queue="core_only",state="completed"}} 2.0' in \\
            generate_latest(reg)
        for call in (q.jobs_frame, lambda: nbqueue.dashboard(["core_only"])):
            try:
                call()
            except MissingDependencyError as exc:
                print("error:", exc)
        loaded = [m for m in {NOTEBOOK_LAYER!r} if sys.modules.get(m) is not None]
        print("loaded:", loaded)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "loaded: []" in res.stdout
    errors = [line for line in res.stdout.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: nbqueue's DataFrames (jobs_frame, metrics_frame, export...) needs pandas, "
        "which is not installed: pip install 'nbqueue[notebook]' (the notebook layer)",
        "error: nbqueue.dashboard() needs anywidget, which is not installed: "
        "pip install 'nbqueue[notebook]' (the notebook layer)"]


def test_markdown_export_without_tabulate_names_the_extra(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.modules["tabulate"] = None
        import nbqueue
        from nbqueue.frames import metrics_frame
        try:
            nbqueue.export(metrics_frame([]), {str(tmp_path / "m.md")!r})
        except ImportError as exc:
            print(type(exc).__name__, exc)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.stdout.strip() == ("MissingDependencyError exporting to m.md needs tabulate, "
                                  "which is not installed: pip install 'nbqueue[notebook]' "
                                  "(the notebook layer)")


def test_no_placeholder_links() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "OWNER" not in readme
    # a Binder badge only with a real repository (there is none yet: see README Notebooks)
    assert "mybinder.org/badge" not in readme
    assert "[project.urls]" not in (ROOT / "pyproject.toml").read_text()
