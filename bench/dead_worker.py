"""How long the jobs of a killed kernel wait before another worker runs them (issue 19 item 5).

``python -m bench.dead_worker [--nbqueue PATH] [--reps 3]``

A "kernel" process runs a thread-mode worker (default settings: lock 30 s, stalled sweep
every 30 s, heartbeat every 5 s) that holds two jobs (their bodies sleep an hour) when it is
killed with SIGKILL. A second worker process on the same machine (same defaults), started
before the kill and idle, is the rescuer. Reported: seconds from the kill until the rescuer
has finished both jobs, per repetition and the median. ``--nbqueue PATH`` runs that checkout
(e.g. ``/work/base``, the code before this change, for the "before" figure) in both
processes.

Before: the jobs wait for their locks to expire and for a stalled sweep (30-60 s). After:
the rescuer's next heartbeat sees that the kernel's pid is gone (``nbqueue.reaper``) and
releases them (at most one heartbeat interval, 5 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time

import redis

from bench.harness import RedisServer

QUEUE = "deadw"

_WORKER = textwrap.dedent("""
    import os, sys, time, redis, nbqueue
    url, role, queue = sys.argv[1], sys.argv[2], sys.argv[3]
    r = redis.Redis.from_url(url, decode_responses=True)

    def work(job):
        if role == "kernel":
            r.hset("b:runs", job.id, os.getpid())
            time.sleep(3600)
        r.hset("b:done", job.id, repr(time.time()))
        return 1

    w = nbqueue.Worker(queue, work, nbqueue.connect(url), concurrency=2)
    print("started", flush=True)
    w.run()
""")


def _spawn(url: str, role: str, path: str | None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if path:  # (cwd too: `python -c` puts the working directory first on sys.path)
        env["PYTHONPATH"] = path
    p = subprocess.Popen([sys.executable, "-c", _WORKER, url, role, QUEUE], stdout=subprocess.PIPE,
                         text=True, env=env, start_new_session=True, cwd=path)
    assert p.stdout is not None
    p.stdout.readline()
    return p


def one_run(url: str, path: str | None) -> float:
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushall()
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path
    adder = ("import sys, nbqueue; q = nbqueue.Queue(sys.argv[2], nbqueue.connect(sys.argv[1]));"
             " [q.add({'type': 't'}) for _ in range(2)]")
    kernel = _spawn(url, "kernel", path)
    rescuer = None
    try:
        subprocess.run([sys.executable, "-c", adder, url, QUEUE], check=True, env=env, cwd=path)
        while r.hlen("b:runs") < 2:
            time.sleep(0.02)
        rescuer = _spawn(url, "rescuer", path)
        time.sleep(1.0)  # registered and idle
        os.killpg(kernel.pid, signal.SIGKILL)
        kernel.wait()
        killed = time.time()
        while r.hlen("b:done") < 2:
            time.sleep(0.05)
        return max(float(v) for v in r.hvals("b:done")) - killed
    finally:
        for p in (kernel, rescuer):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nbqueue", default=None, help="checkout to run (default: this one)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    server = RedisServer().start()
    try:
        times = [one_run(server.url, a.nbqueue) for _ in range(a.reps)]
    finally:
        server.stop()
    shown = ", ".join(f"{t:.2f}" for t in times)
    print(f"nbqueue from {a.nbqueue or 'this checkout'}: jobs of a killed kernel re-run "
          f"{statistics.median(times):.2f} s after the kill (median; runs: {shown})")


if __name__ == "__main__":
    main()
