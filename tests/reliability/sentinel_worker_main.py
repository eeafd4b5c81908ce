"""A worker process for test_sentinel.py:
``python sentinel_worker_main.py URL QUEUE MODE OUT [SLEEP]``.

Connects through the Sentinel URL and runs a worker of MODE (thread | asyncio | process);
every job run appends ``"<job id> <payload n>"`` to the file OUT (outside Redis: a failover
may lose what Redis held), then sleeps SLEEP seconds (default 0). ``Worker.run()`` stops
gracefully on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

from nbqueue import Worker, connect


def record(path: str, job: Any) -> None:
    line = f"{job.id} {job.data['payload']['n']}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one O_APPEND write: lines of concurrent writers never mix
    finally:
        os.close(fd)


def main() -> None:
    url, queue, mode, out = sys.argv[1:5]
    pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    logging.basicConfig(level=logging.ERROR, format="%(process)d %(name)s %(message)s")
    conn = connect(url)

    if mode == "asyncio":
        async def work(job: Any) -> int:
            record(out, job)
            await asyncio.sleep(pause)
            return int(job.data["payload"]["n"])
    else:
        def work(job: Any) -> int:  # type: ignore[misc]
            record(out, job)
            time.sleep(pause)
            return int(job.data["payload"]["n"])

    print("ready", flush=True)
    Worker(queue, work, conn, concurrency=4 if mode != "process" else 2, mode=mode,
           lock_duration=2000, stalled_interval=1000, max_stalled_count=1000,
           grace=5).run()


if __name__ == "__main__":
    main()
