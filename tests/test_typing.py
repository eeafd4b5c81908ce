"""Types of the public API, checked by mypy as a user's code would be (no Redis needed).

``mypy --strict`` must pass on the facade modules, on the README quick start, and on a small
script that leans on the precise return types (``Queue.add`` -> ``Job``, ``aio.Queue.add`` ->
awaitable ``aio.Job``, ``queue_manager.add_job`` -> ``Job``); and it must fail on a script
that misuses them (so these tests can fail).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRICT_MODULES = ["nbqueue/__init__.py", "nbqueue/aio.py", "nbqueue/queue.py",
                  "nbqueue/job.py", "nbqueue/manager.py"]

TYPED_USE = '''
from typing import Any

import nbqueue
from nbqueue import Job, JobBatch, JobStatus, Queue, QueueMetrics, queue_manager
from nbqueue import aio


def sync_use() -> None:
    value: Any = nbqueue.Queue("q").add({"type": "t"}).result(timeout=1)
    job: Job = Queue("q").add({"type": "t"}, priority=2)
    same: Job = job.refresh()
    batch: JobBatch = Queue("q").add_bulk([{"type": "t"}])
    found: Job | None = Queue("q").get_job("1")
    status: JobStatus | None = queue_manager.get_job_status("q", "1")
    metrics: QueueMetrics = queue_manager.get_queue_metrics("q")
    by_name: Job = queue_manager.add_job("q", {"type": "t"})
    queue: Queue = queue_manager.get_queue("q")
    print(value, same, batch, found, status, metrics, by_name, queue)


def batch_use() -> None:
    # a batch is a list of Job: iterating it gives handles with .result()
    for job in Queue("q").map([{"type": "t"}]):
        value: Any = job.result(timeout=1)
        print(value)
    bulk = Queue("q").add_bulk([{"type": "t"}])
    results: list[Any] = [job.result() for job in bulk]
    mapped: JobBatch = queue_manager.map("q", [{"type": "t"}], chunksize=10)
    first: Job = mapped[0]
    failed: list[Job] = mapped.failed()
    done: list[Any] = [j.result() for j in mapped.as_completed(timeout=5)]
    print(results, first, failed, done, mapped.wait(progress=False).results())


async def async_batch_use() -> None:
    batch: aio.JobBatch = await aio.Queue("q").map([{"type": "t"}])
    for job in batch:
        value: Any = await job.result(timeout=1)
        print(value)
    first: aio.Job = batch[0]
    async for j in batch.as_completed():
        print(await j.result())
    failed: list[aio.Job] = await batch.failed()
    print(first, failed)


async def async_use() -> None:
    job: aio.Job = await aio.Queue("q").add({"type": "t"})
    again: aio.Job = await job.refresh()
    by_name: aio.Job = await aio.queue_manager.add_job("q", {"type": "t"})
    queue: aio.Queue = aio.queue_manager.get_queue("q")
    worker: aio.Worker = await aio.queue_manager.start_worker("q")
    await worker.stop()
    print(again, by_name, queue)
'''

MISUSE = '''
from nbqueue import Queue, aio


async def wrong() -> None:
    job = Queue("q").add({"type": "t"})
    job.no_such_method()
    not_awaited: aio.Job = aio.Queue("q").add({"type": "t"})


def batch_misuse() -> None:
    wrong_kind: aio.Job = Queue("q").map([{"type": "t"}])[0]
    for job in Queue("q").add_bulk([{"type": "t"}]):
        job.no_such_batch_method()
'''


def mypy(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    # --follow-imports=silent: the imported nbqueue modules are read for their types, and
    # errors are reported for the files named only.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--no-error-summary", "--config-file", str(ROOT / "pyproject.toml"),
         *(str(p) for p in paths)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Quick start in a service"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block in the README's service quick start"
    return match.group(1)


def test_the_facade_modules_pass_mypy_strict() -> None:
    res = mypy(*STRICT_MODULES)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_readme_quick_start_and_typed_use_pass_mypy_strict(tmp_path: Path) -> None:
    (tmp_path / "quick_start.py").write_text(quick_start())
    (tmp_path / "typed_use.py").write_text(TYPED_USE)
    res = mypy(tmp_path / "quick_start.py", tmp_path / "typed_use.py")
    assert res.returncode == 0, res.stdout + res.stderr


def test_misuse_is_caught(tmp_path: Path) -> None:
    (tmp_path / "misuse.py").write_text(MISUSE)
    res = mypy(tmp_path / "misuse.py")
    assert res.returncode != 0
    assert '"Job" has no attribute "no_such_method"' in res.stdout
    assert "Coroutine" in res.stdout  # an un-awaited aio call is not a Job
    # a sync batch holds sync jobs (not aio ones), and they are typed (not Any)
    assert 'expression has type "Job", variable has type "AsyncJob"' in res.stdout
    assert '"Job" has no attribute "no_such_batch_method"' in res.stdout
