"""The example notebooks, and notebook-defined workers, in a real kernel (nbclient).

The notebooks run on the *embedded default* server (no NBQUEUE_REDIS_URL in the kernel's
environment; NBQUEUE_HOME is a fresh temp dir, whose server is stopped afterwards) with
NBQUEUE_NB_SMALL=1 so each takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

import nbqueue

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
pytestmark = pytest.mark.notebook


@pytest.fixture
def embedded_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The kernel's environment: no Redis URL, a private NBQUEUE_HOME (server stopped after)."""
    home = tempfile.mkdtemp(prefix="nbqh-")  # short: the unix socket path must fit
    env = {k: v for k, v in os.environ.items() if k not in ("NBQUEUE_REDIS_URL", "REDIS_URL")}
    env.update(NBQUEUE_HOME=home, NBQUEUE_NB_SMALL="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    try:
        yield env
    finally:
        from nbqueue import server

        monkeypatch.setenv("NBQUEUE_HOME", home)
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def run_notebook(name: str, env: dict[str, str], cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}},
                            store_widget_state=True)
    client.execute(env=env, cwd=str(cwd))
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    """All text and HTML outputs of the notebook, joined."""
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                parts.append("ERROR " + out.get("ename", ""))
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts.append(data.get("text/plain", ""))
            parts.append(data.get("text/html", ""))
    return "\n".join(parts)


def widget_states(nb: nbformat.NotebookNode) -> dict[str, Any]:
    saved = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return {k: v["state"] for k, v in saved.get("state", {}).items()}


def test_01_quickstart(embedded_env: dict[str, str], tmp_path: Path) -> None:
    nb = run_notebook("01-quickstart.ipynb", embedded_env, tmp_path)
    out = text_of(nb)
    assert "ERROR" not in out
    assert "result: {'n': 7, 'square': 49}" in out
    assert "batch done: 10 jobs; sum of squares = 285" in out
    assert "'square': 144" in out  # %%enqueue --wait returned the result
    assert "total computed on the worker: 285" in out  # %%enqueue --run --out
    assert "nbqueue-job" in out  # the job's rich HTML
    assert "workers running: 0" in out
    # the embedded server was used (not the test suite's Redis)
    assert (Path(embedded_env["NBQUEUE_HOME"])).exists()


def test_02_dashboard(embedded_env: dict[str, str], tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    # a dead-letter record of the user's, on the same embedded server, must survive
    from nbqueue import Queue, connect

    monkeypatch.delenv("NBQUEUE_REDIS_URL", raising=False)
    monkeypatch.setenv("NBQUEUE_HOME", embedded_env["NBQUEUE_HOME"])
    conn = connect()
    users = Queue("dead_letter", conn).add({"type": "dead_letter", "payload": {
        "queue": "billing", "job_id": "7", "reason": "card declined"}})
    nb = run_notebook("02-dashboard.ipynb", embedded_env, tmp_path)
    out = text_of(nb)
    left = Queue("dead_letter", conn).get_jobs("waiting", 0, 0)
    assert [j.id for j in left] == [users.id]  # the user's survived; the notebook's went
    assert "own dead-letter records removed: 2" in out  # the poison job failed twice
    conn.close()
    assert "ERROR" not in out
    assert "first job run: urgent" in out  # strict priority on a process worker
    assert "ok after 2 attempt(s)" in out  # retried once
    assert "poison: failed - poison message" in out
    assert "paused: True" in out and "paused: False" in out
    assert "1 failed job(s) moved back to wait" in out
    assert "drain needs a confirmation" in out and "drained" in out
    assert "error: poison message" in out  # the drill-down's job detail
    assert "workers running: 0" in out and "dashboard refreshing: False" in out
    states = widget_states(nb)
    panels = [s for s in states.values() if "state_json" in s]
    assert len(panels) == 1
    rows = {r["name"]: r for r in json.loads(panels[0]["state_json"])["queues"]}
    assert list(rows) == ["nb02_reports", "nb02_flaky", "dead_letter"]
    assert rows["nb02_reports"]["counts"]["completed"] == 11  # 10 low + 1 urgent
    assert panels[0]["live"] is False  # stopped at the end, and shown as stopped


_scheduler = pytest.mark.skipif(not hasattr(nbqueue, "schedule_recurring_job"),
                                reason="nbqueue.schedule_recurring_job is not available yet")


@_scheduler
def test_03_scheduling_and_metrics(embedded_env: dict[str, str], tmp_path: Path) -> None:
    nb = run_notebook("03-scheduling-and-metrics.ipynb", embedded_env, tmp_path)
    out = text_of(nb)
    assert "ERROR" not in out
    assert "heartbeats completed: 3" in out
    assert "schedulers: ['digest', 'heartbeat']" in out
    assert "exported history.csv True" in out and "exported history.md True" in out
    assert "| minute" in out
    assert "workers running: 0" in out


# -- workers started from a kernel -------------------------------------------------------------
KERNEL_SETUP = """
_ws = []
import nbqueue
from nbqueue import queue_manager
"""

KERNEL_CELL = """
def triple(job):            # defined in the kernel's __main__
    return job.payload * 3
queue_manager.register_processor("kq", triple)
w = queue_manager.start_worker("kq", mode="process", processes=1)
"""


def _execute(kc: Any, code: str) -> str:
    """Run ``code`` in the kernel; its stdout (raises on an error)."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append(f"ERROR {msg['content']['ename']}: {msg['content']['evalue']}")

    reply = kc.execute_interactive(code, timeout=120, output_hook=hook)
    text = "".join(out)
    assert reply["content"]["status"] == "ok", text
    return text


def test_kernel_workers_rerun_and_shutdown(redis_url: str, r: Any, tmp_path: Path) -> None:
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, NBQUEUE_REDIS_URL=redis_url)
    km, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(tmp_path))
    try:
        _execute(kc, KERNEL_SETUP)
        _execute(kc, "queue_manager.get_queue('kq')")
        _execute(kc, KERNEL_CELL)
        _execute(kc, "first = w; first_pids = w.child_pids")
        # re-running the same cell (a new `triple`): still one worker for the queue
        _execute(kc, KERNEL_CELL)
        out = _execute(kc, """
print("workers:", len(queue_manager.workers), "first running:", first.is_running)
print("result:", queue_manager.add_job("kq", {"type": "t", "payload": 14}).result(timeout=60))
same = queue_manager.start_worker("kq", mode="process", processes=1)
print("same:", same is w)
queue_manager.get_queue("kq-thread")
t = queue_manager.start_worker("kq-thread", processor=lambda job: job.payload + 1)
print("thread result:", queue_manager.add_job("kq-thread", {"type": "t", "payload": 1})
      .result(timeout=60))
pids = w.child_pids
_ws.extend([w, t])
print("pids:", pids)
""")
        assert "workers: 1 first running: False" in out
        assert "result: 42" in out and "same: True" in out and "thread result: 2" in out
        pids = json.loads(out.split("pids:")[1].splitlines()[0].strip())
        assert pids and all(_alive(p) for p in pids)
        assert "already running; returning it" in out  # the re-run is reported
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, "worker processes outlived the kernel"
        time.sleep(0.1)


ATEXIT_SCRIPT = """
import atexit, json, sys

def double(job):  # defined in __main__: the process worker gets it by value (cloudpickle)
    return job.payload * 2

if __name__ == "__main__":  # spawn re-imports the main module in the child
    _ws = []
    atexit.register(lambda: json.dump({"running": [w.is_running for w in _ws]},
                                      open(sys.argv[1], "w")))
    from nbqueue import queue_manager  # registers nbqueue's atexit hook: it runs before ours
    queue_manager.get_queue("ax")
    queue_manager.get_queue("ax-t")
    p = queue_manager.start_worker("ax", mode="process", processor=double, processes=1)
    t = queue_manager.start_worker("ax-t", processor=double)
    print(queue_manager.add_job("ax", {"type": "t", "payload": 21}).result(timeout=60),
          queue_manager.add_job("ax-t", {"type": "t", "payload": 5}).result(timeout=60))
    _ws.extend([p, t])
"""


def test_workers_stop_at_interpreter_exit(redis_url: str, r: Any, tmp_path: Path) -> None:
    """The manager's atexit hook stops thread and process workers of a ``__main__`` script."""
    import subprocess
    import sys

    script = tmp_path / "main.py"
    script.write_text(ATEXIT_SCRIPT)
    state = tmp_path / "state.json"
    env = dict(os.environ, NBQUEUE_REDIS_URL=redis_url)
    proc = subprocess.run([sys.executable, str(script), str(state)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["42", "10"]
    assert json.loads(state.read_text()) == {"running": [False, False]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
