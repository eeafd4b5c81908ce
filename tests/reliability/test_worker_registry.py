"""Issue 13: a SIGKILLed worker process drops out of the registry within its ttl
(3 heartbeat intervals), while a live one stays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from rhelpers import REPO, kill_all, wait_until

from nbqueue import Queue, connect

pytestmark = pytest.mark.reliability

SCRIPT = textwrap.dedent("""
    import sys
    from nbqueue import Worker, connect
    Worker(sys.argv[2], lambda job: None, connect(sys.argv[1]), concurrency=2,
           mode=sys.argv[3], heartbeat_interval=300, name=sys.argv[4]).run()
""")


def test_sigkilled_worker_drops_out(fresh_server):
    url = fresh_server.url
    q = Queue("reg-kill", connect(url))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, url, q.name, mode, name],
                              env=env, cwd=str(REPO))
             for mode, name in (("thread", "victim"), ("asyncio", "survivor"))]
    try:
        assert wait_until(lambda: {w.id for w in q.get_workers()} == {"victim", "survivor"},
                          60)
        victim = next(w for w in q.get_workers() if w.id == "victim")
        assert victim.pid == procs[0].pid
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        # gone once its ttl (3 x 300 ms after its last heartbeat) has passed
        assert wait_until(lambda: {w.id for w in q.get_workers()} == {"survivor"}, 60)
        assert procs[1].poll() is None
    finally:
        kill_all(procs)
