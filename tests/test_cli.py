"""The ``nbqueue`` command, run as a user would (subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from nbqueue import Queue


def run_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "nbqueue", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or os.environ.copy())


def test_demo_on_embedded_default(tmp_path):
    env = os.environ.copy()
    env.pop("NBQUEUE_REDIS_URL", None)
    env.pop("REDIS_URL", None)
    env["NBQUEUE_HOME"] = str(tmp_path / "home")
    try:
        res = run_cli("demo", env=env)
        assert res.returncode == 0, res.stderr
        out = res.stdout
        assert "unix://" in out and "dead letter: demo_data_processing#" in out
        assert "failed after 3 attempts" in out
        assert "demo_data_processing  0" in out  # final table: nothing left waiting
        assert "%" in out  # progress was shown
        # no worker process left behind
        ps = subprocess.run(["pgrep", "-f", "nbqueue demo"], capture_output=True, text=True)
        assert ps.stdout.strip() == ""
    finally:
        run_cli("server", "stop", env=env)


def test_worker_and_stats_commands(conn, tmp_path, redis_url):
    (tmp_path / "procs.py").write_text(textwrap.dedent("""
        def double(job):
            return job.data["payload"] * 2
    """))
    q = Queue("cliq", conn)
    jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(5)])
    proc = subprocess.Popen([sys.executable, "-m", "nbqueue", "--url", redis_url, "worker",
                             "cliq", "--processor", f"{tmp_path}/procs.py:double",
                             "--concurrency", "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert [j.result(timeout=30) for j in jobs] == [0, 2, 4, 6, 8]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    res = run_cli("--url", redis_url, "stats", "cliq")
    assert res.returncode == 0
    assert "cliq" in res.stdout and "completed" in res.stdout
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("cliq"))
    assert line.split()[4] == "5"


def test_cli_reports_unreachable_redis():
    t0 = time.monotonic()
    res = run_cli("--url", "redis://:pw@127.0.0.1:1/0", "stats")
    assert res.returncode == 1
    assert "127.0.0.1:1" in res.stderr and "pw@" not in res.stderr
    assert time.monotonic() - t0 < 60
