"""``nbqueue demo``: enqueue data-processing jobs at several priorities, process them with
a thread worker (one fails into the dead-letter queue after its retries), show progress,
and print what happened. Runs on the embedded default Redis unless a URL is set.

The demo only touches what it creates: a queue with a fresh name of its own, and the
dead-letter records of that queue. At the end it removes both (``--keep`` keeps them);
nothing else in Redis is read for writing, deleted or changed.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from .connection import connect
from .errors import InvalidOptionError
from .keys import DEAD_LETTER_QUEUE
from .manager import QueueManager
from .tables import format_table
from .types import JobPriority, JobState

DEMO_PREFIX = "demo_data_processing_"
ATTEMPTS = 3
BACKOFF_MS = 100
DEMO_COLUMNS = ("queue", "completed", "failed", "waiting", "active", "delayed")


def _process(job: Any) -> dict[str, Any]:
    """Sum the numbers in steps, reporting progress; `poison` jobs always raise."""
    started = time.perf_counter()
    data = job.data["payload"]["data"]
    if job.data["payload"].get("poison"):
        raise ValueError(f"cannot process {job.data['payload']['dataset']}: bad checksum")
    total = 0
    for i, x in enumerate(data, 1):
        total += x
        time.sleep(0.01)
        job.update_progress(round(100 * i / len(data)))
    return {"success": True, "data": {"sum": total},
            "duration_ms": round((time.perf_counter() - started) * 1000)}


def run_demo(jobs: int = 12, url: str | None = None, keep: bool = False) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InvalidOptionError(f"the demo needs jobs >= 1, not {jobs!r}")
    conn = connect(url)
    print(f"nbqueue demo on {conn!r}")
    mgr = QueueManager(connection=conn)
    name = DEMO_PREFIX + secrets.token_hex(3)  # a queue of its own: nobody else's data
    queue = mgr.get_queue(name, worker_concurrency=4, default_job_options={
        "attempts": ATTEMPTS, "backoff": {"type": "exponential", "delay": BACKOFF_MS}})
    print(f"queue {name!r} (new; {'kept' if keep else 'removed'} at the end)")
    priorities = list(JobPriority)
    handles = []
    for i in range(jobs):
        prio = priorities[i % len(priorities)]
        handles.append(mgr.add_job(name, {
            "type": "process_data", "user_id": "demo",
            "payload": {"dataset": f"ds-{i:02d}", "data": list(range(i, i + 10))}},
            priority=prio))
    poison = mgr.add_job(name, {"type": "process_data", "payload": {
        "dataset": "ds-corrupt", "data": [1], "poison": True}}, priority=JobPriority.LOW)
    counts = ", ".join(f"{sum(1 for h in handles if h.priority == p)} {p.name}"
                       for p in priorities)
    print(f"enqueued {jobs} jobs ({counts}) and 1 job (ds-corrupt, LOW) that always fails: "
          f"attempts={ATTEMPTS}, retried after {BACKOFF_MS} ms then {2 * BACKOFF_MS} ms")
    print("waiting = not started; active = running now; delayed = the failing job waiting "
          "out its retry backoff")
    mgr.register_processor(name, _process)
    started = time.monotonic()
    mgr.start_worker(name, mode="thread")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = queue.get_metrics()
            active = queue.get_jobs("active", 0, 4)
            bars = "  ".join(f"{j.data['payload']['dataset']} {_bar(j.progress)}"
                             for j in active)
            print(f"  waiting={m.waiting:<3} active={m.active:<2} delayed={m.delayed:<2} "
                  f"completed={m.completed:<3} failed={m.failed:<2} {bars}", flush=True)
            if m.waiting + m.active + m.delayed == 0:
                break
            time.sleep(0.25)
    finally:
        mgr.stop_worker(name)
    print(f"\nall {jobs + 1} jobs ended in {time.monotonic() - started:.1f} s")
    done = sorted(queue.get_jobs("completed", 0, 0),
                  key=lambda j: (j.processed_on or 0, j.priority, int(j.id)))
    order = " ".join(f"{j.data['payload']['dataset']}({JobPriority(j.priority).name})"
                     for j in done)
    print(f"start order (strict priority, FIFO within a level; 4 at a time): {order}")
    first = handles[0]
    value = first.result(timeout=5)
    print(f"job {first.id} ({first.data['payload']['dataset']}) returned "
          f"sum={value['data']['sum']} (took {value['duration_ms']} ms)")
    status = mgr.get_job_status(name, poison.id)
    assert status is not None and status.state is JobState.FAILED, status
    print(f"job {poison.id} (ds-corrupt) failed after {status.attempts_made} attempts: "
          f"{status.failed_reason}")
    dead_q = mgr.get_queue(DEAD_LETTER_QUEUE)
    # the newest records (ours were just added): ZRANGE -100 -1, not the whole queue
    ours = [d for d in dead_q.get_jobs("waiting", -100, 100)
            if d.data["payload"].get("queue") == name]
    for d in ours:
        p = d.data["payload"]
        print(f"dead-letter record: {p['queue']}#{p['job_id']} reason={p['reason']!r} "
              f"attempts={p['attempts_made']}")
    m = queue.get_metrics()
    row = {"queue": name, "completed": m.completed, "failed": m.failed, "waiting": m.waiting,
           "active": m.active, "delayed": m.delayed}
    print("\n" + format_table([row], DEMO_COLUMNS))
    if not keep:
        for d in ours:
            dead_q.remove(d.id)
        queue.obliterate()
        print(f"\nremoved queue {name!r} and its {len(ours)} dead-letter record(s); "
              "nothing else was touched (--keep keeps them)")
    mgr.close()
    return 0


def _bar(progress: Any, width: int = 10) -> str:
    value = progress if isinstance(progress, (int, float)) else 0
    filled = int(width * max(0, min(100, value)) / 100)
    return "[" + "#" * filled + "." * (width - filled) + f"] {int(value):3d}%"
