"""binder/: the files Binder needs, and `binder/start` starting Redis (run directly; no Docker)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BINDER = Path(__file__).resolve().parent.parent / "binder"


def test_binder_files() -> None:
    assert "redis-server" in (BINDER / "apt.txt").read_text().split()
    reqs = (BINDER / "requirements.txt").read_text()
    for pkg in ("ipywidgets", "ipykernel", "pandas"):
        assert pkg in reqs
    start = (BINDER / "start").read_text().strip().splitlines()
    assert start[0].startswith("#!") and start[-1] == 'exec "$@"'
    for name in ("start", "postBuild"):
        assert os.access(BINDER / name, os.X_OK), f"binder/{name} must be executable"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_binder_start_launches_redis_then_execs_the_command() -> None:
    state = tempfile.mkdtemp(prefix="nbqb-")  # short: the unix socket path must fit
    env = {k: v for k, v in os.environ.items() if k != "NBQUEUE_REDIS_URL"}
    env["NBQUEUE_BINDER_DIR"] = state
    probe = ("import os, redis; url = os.environ['NBQUEUE_REDIS_URL']; "
             "print(url, redis.Redis.from_url(url).ping()); raise SystemExit(7)")
    try:
        t0 = time.monotonic()
        proc = subprocess.run([str(BINDER / "start"), sys.executable, "-c", probe], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 7, proc.stderr  # exec "$@": the command's own exit code
        url, pong = proc.stdout.split()
        assert url == f"unix://{state}/redis.sock" and pong == "True"
        assert time.monotonic() - t0 < 30
        # a second launch reuses the running server
        again = subprocess.run([str(BINDER / "start"), sys.executable, "-c", probe], env=env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 7 and again.stdout.split()[1] == "True"
    finally:
        pidfile = Path(state) / "redis.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        shutil.rmtree(state, ignore_errors=True)
