"""Helpers of the reliability suite: worker subprocesses and a queue-state checker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATE_SETS = {"waiting": "wait", "active": "active", "delayed": "delayed",
              "completed": "completed", "failed": "failed",
              "waiting-children": "waiting-children"}


def spawn_worker(url: str, queue: str, *, concurrency: int = 4, lock: int = 2000,
                 stalled: int = 1000, max_stalled: int = 1000, grace: float = 30.0,
                 sleep: float = 0.0, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``worker_main.py`` as a subprocess (its stdout/stderr go to ``log``)."""
    cmd = [sys.executable, str(HERE / "worker_main.py"), url, queue,
           "--concurrency", str(concurrency), "--lock", str(lock), "--stalled", str(stalled),
           "--max-stalled", str(max_stalled), "--grace", str(grace), "--sleep", str(sleep)]
    out: Any = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    if log:
        out.close()
    return proc


def kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL the given processes (ours) and reap them."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            pass


def alive(pid: int) -> bool:
    """A running (not zombie) process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = next((ln for ln in status.splitlines() if ln.startswith("State:")), "")
    return "Z" not in state and "X" not in state


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def check_states(r: Any, queue: str, prefix: str = "nbq") -> list[str]:
    """Every job id in exactly one state set, its hash ``state`` agreeing; returns problems.

    ``r`` is a decoded redis client. Waiting jobs of a paused queue say ``waiting`` too.
    """
    base = f"{prefix}:{{{queue}}}:"
    members: dict[str, list[str]] = {}
    for state, suffix in STATE_SETS.items():
        for jid in r.zrange(base + suffix, 0, -1):
            members.setdefault(jid, []).append(state)
    problems = []
    job_prefix = base + "job:"
    hashes = {k[len(job_prefix):] for k in r.scan_iter(match=_glob_escape(job_prefix) + "*",
                                                       count=1000)}
    for jid, states in members.items():
        if len(states) != 1:
            problems.append(f"job {jid!r} is in {states}")
            continue
        stored = r.hget(job_prefix + jid, "state")
        if stored is None:
            problems.append(f"job {jid!r} in {states[0]} has no hash")
        elif stored != states[0]:
            problems.append(f"job {jid!r} in {states[0]} but its hash says {stored!r}")
    for jid in hashes - set(members):
        problems.append(f"job hash {jid!r} is in no state set "
                        f"(state={r.hget(job_prefix + jid, 'state')!r})")
    return problems


def _glob_escape(s: str) -> str:
    out = []
    for c in s:
        out.append("\\" + c if c in "*?[]\\" else c)
    return "".join(out)
