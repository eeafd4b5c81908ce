"""A stand-in for a notebook kernel: ``python kernel_main.py URL QUEUE MODE``.

The processor is defined here, in ``__main__``, as a notebook cell defines it (cloudpickle
sends it by value). MODE:
- ``detach``: start a detached process worker (``start_worker(..., mode="process",
  detach=True)``, lock 600 s), print its id and pid, then sleep until killed;
- ``inkernel``: run a thread-mode worker in this process (lock 600 s, as if the kernel's
  own worker) and sleep until killed.
Each job HINCRBYs ``k:runs:{QUEUE}`` (field = job id, value = runs) with the pid that ran
it in ``k:pid:{QUEUE}``, sleeps ``payload["sleep"]`` seconds, and returns
``payload["x"] * 2`` and the marker ``KERNEL-FN-MARKER-5b1e`` (never seen in Redis before
the job ran: the function travels over a pipe).
"""

from __future__ import annotations

import os
import sys
import time

import redis

import nbqueue

URL, QUEUE, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
client = redis.Redis.from_url(URL, decode_responses=True)


def double(job):  # type: ignore[no-untyped-def]
    r = redis.Redis.from_url(URL, decode_responses=True)
    r.hincrby(f"k:runs:{{{QUEUE}}}", job.id, 1)
    r.hset(f"k:pid:{{{QUEUE}}}", job.id, os.getpid())
    time.sleep(job.payload.get("sleep", 0))
    if job.payload.get("fail"):
        raise ValueError("a failing chunk")
    return {"y": job.payload["x"] * 2, "tag": "KERNEL-FN-" + "MARKER-5b1e"}


def main() -> None:
    mgr = nbqueue.QueueManager(connection=nbqueue.connect(URL))
    mgr.get_queue(QUEUE)
    mgr.register_processor(QUEUE, double)
    if MODE == "detach":
        w = mgr.start_worker(QUEUE, 2, mode="process", detach=True, lock_duration=600_000,
                             stalled_interval=600_000)
        print(f"DETACHED {w.id} {w.pid}", flush=True)
    else:
        mgr.start_worker(QUEUE, 2, mode="thread", lock_duration=600_000,
                         stalled_interval=600_000)
        print(f"INKERNEL {os.getpid()}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
