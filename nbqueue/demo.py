"""``nbqueue demo``: enqueue data-processing jobs at several priorities, process them with
a thread worker (one fails into the dead-letter queue after its retries), show progress,
and print the final metrics. Runs on the embedded default Redis unless a URL is set."""

from __future__ import annotations

import time
from typing import Any

from .cli import METRIC_COLUMNS, format_table
from .connection import connect
from .manager import QueueManager
from .types import JobPriority, JobState

DEMO_QUEUE = "demo_data_processing"


def _process(job: Any) -> dict[str, Any]:
    """Sum the numbers in steps, reporting progress; `poison` jobs always raise."""
    data = job.data["payload"]["data"]
    if job.data["payload"].get("poison"):
        raise ValueError(f"cannot process {job.data['payload']['dataset']}: bad checksum")
    total = 0
    for i, x in enumerate(data, 1):
        total += x
        time.sleep(0.01)
        job.update_progress(round(100 * i / len(data)))
    return {"success": True, "data": {"sum": total}, "duration": int(time.time() * 1000)
            - job.timestamp}


def run_demo(jobs: int = 12, url: str | None = None) -> int:
    conn = connect(url)
    print(f"nbqueue demo on {conn!r}")
    mgr = QueueManager(connection=conn)
    for name in (DEMO_QUEUE, "dead_letter"):
        mgr.get_queue(name).obliterate(force=True)
    queue = mgr.get_queue(DEMO_QUEUE, worker_concurrency=4, default_job_options={
        "attempts": 3, "backoff": {"type": "exponential", "delay": 100}})
    priorities = list(JobPriority)
    handles = []
    for i in range(jobs):
        prio = priorities[i % len(priorities)]
        handles.append(mgr.add_job(DEMO_QUEUE, {
            "type": "process_data", "user_id": "demo",
            "payload": {"dataset": f"ds-{i:02d}", "data": list(range(i, i + 10))}},
            priority=prio))
    poison = mgr.add_job(DEMO_QUEUE, {"type": "process_data", "payload": {
        "dataset": "ds-corrupt", "data": [1], "poison": True}}, priority=JobPriority.LOW)
    print(f"enqueued {jobs} jobs at priorities "
          f"{', '.join(p.name for p in priorities)} + 1 that always fails")
    mgr.register_processor(DEMO_QUEUE, _process)
    mgr.start_worker(DEMO_QUEUE, mode="thread")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = queue.get_metrics()
            active = [j for j in queue.get_jobs("active", 0, 4)]
            bars = "  ".join(f"{j.data['payload']['dataset']} {_bar(j.progress)}" for j in active)
            print(f"  waiting={m.waiting:<3} active={m.active:<2} delayed={m.delayed:<2} "
                  f"completed={m.completed:<3} failed={m.failed:<2} {bars}", flush=True)
            if m.total == 0:
                break
            time.sleep(0.25)
    finally:
        mgr.stop_worker(DEMO_QUEUE)
    first = handles[0].result(timeout=5)
    print(f"\nresult of job {handles[0].id}: {first}")
    status = mgr.get_job_status(DEMO_QUEUE, poison.id)
    assert status is not None and status.state is JobState.FAILED, status
    print(f"job {poison.id} failed after {status.attempts_made} attempts: "
          f"{status.failed_reason}")
    dead = mgr.get_queue("dead_letter").get_jobs("waiting", 0, 10)
    for d in dead:
        p = d.data["payload"]
        print(f"dead letter: {p['queue']}#{p['job_id']} reason={p['reason']!r} "
              f"attempts={p['attempts_made']}")
    rows = [mgr.get_queue_metrics(n).to_dict() for n in (DEMO_QUEUE, "dead_letter")]
    print("\n" + format_table(rows, METRIC_COLUMNS))
    return 0


def _bar(progress: Any, width: int = 10) -> str:
    value = progress if isinstance(progress, (int, float)) else 0
    filled = int(width * max(0, min(100, value)) / 100)
    return "[" + "#" * filled + "." * (width - filled) + f"] {int(value):3d}%"
