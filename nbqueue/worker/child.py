"""A process-mode child: it runs the job bodies its parent (``process.ProcessRunner``)
hands it, one at a time and in order (the one after the running one is its held job),
with the same ``JobBody`` as every other mode, and sends back progress, log lines and
outcomes over its pipe. See ``nbqueue.worker.process`` for the whole protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from typing import Any

from ..errors import JobCancelledError
from .body import JobBody

STARTED = 2  # slot of a child's ``cancels`` array: the sequence number of its latest start


class _PipeSink:
    """A child's ``ProgressSink``: progress and log lines go to the parent over the pipe."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def report_progress(self, job: Any, value: Any) -> None:
        self.conn.send(("progress", job.id, value))

    def report_log(self, job_id: str, line: str) -> None:
        self.conn.send(("log", job_id, line))


def _die_with_parent(parent_pid: int) -> None:
    """Linux: ask the kernel to SIGKILL us when the parent dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
            # PR_SET_CHILD_SUBREAPER: what a body leaves behind stays our descendant even
            # when its own parent exits (double fork), so _end_descendants finds it
            libc.prctl(36, 1, 0, 0, 0)
        except Exception:  # pragma: no cover - no libc: the pipe's EOF still ends us
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def child_main(payload: bytes, conn: Any, parent_pid: int, cancels: Any) -> None:
    """A child: run the jobs the parent sends, one at a time and in order (the one after
    the running one is its held job), until told to stop. ``cancels``: shared slots where
    the parent writes the sequence number of a job to cancel (slot ``seq % 2``: a child has
    at most two jobs, consecutive numbers) and the child the number of the job it starts
    (slot ``STARTED``), both under the array's lock: a held job is either started or
    cancelled, never both."""
    _die_with_parent(parent_pid)
    # Its own process group: whatever a body starts (fork, subprocess, multiprocessing)
    # belongs to it, and the parent kills the group when the child dies or is replaced.
    with contextlib.suppress(OSError):
        os.setsid()
    # Bodies may use multiprocessing: a daemonic process may not have children, and the
    # group kill above is what keeps those from outliving their job.
    multiprocessing.current_process().daemon = False
    current: dict[str, Any] = {}  # "seq", "job", "task", "body" of the job running now

    def on_term(signum: int, frame: Any) -> None:
        # A busy child ignores SIGTERM (a process-group SIGTERM also reaches the parent,
        # which stops gracefully and ends its children); an idle one just exits.
        if not current:
            os._exit(0)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    # A process a body forks (multiprocessing's pool workers...) gets the default handlers
    # back: ours would make it ignore the SIGTERM its pool ends it with.
    os.register_at_fork(after_in_child=_default_signals)
    import cloudpickle

    from .. import sources
    from ..connection import Connection
    from ..processor import is_async
    from ..queue import AsyncQueue, Queue
    from . import capture

    capture.install()  # before basicConfig, so its handler writes through the proxies
    logging.basicConfig(level=os.environ.get("NBQUEUE_LOG_LEVEL", "WARNING"))
    spec = cloudpickle.loads(payload)
    processor = spec["processor"]
    sources.restore(processor, spec.get("sources"))  # notebook lines in its tracebacks
    asynchronous = is_async(processor)
    connection = Connection.from_spec(spec["connection"], store=spec.get("store"))
    queue = (AsyncQueue if asynchronous else Queue)(spec["queue_name"], connection,
                                                    prefix=spec["prefix"])
    sink = _PipeSink(conn)
    loop = asyncio.new_event_loop() if asynchronous else None

    def marked(seq: int) -> bool:
        return bool(cancels[seq % 2] == seq)

    def on_cancel(signum: int, frame: Any) -> None:
        job = current.get("job")
        if job is None or not marked(current["seq"]):
            return  # between jobs (too late: the outcome stands), or meant for another job
        if job._cancel_requested is not None:
            job._cancel_requested.set()
        task = current.get("task")
        if task is not None:
            assert loop is not None
            loop.call_soon_threadsafe(task.cancel)
        elif current.get("body"):
            raise JobCancelledError(f"job {job.id} was cancelled")

    # The processor, marked while it runs: where a cancel may interrupt it.
    def call_sync(job: Any) -> Any:
        current["body"] = True
        try:
            return processor(job)
        finally:
            current["body"] = False

    async def call_async(job: Any) -> Any:
        current["task"] = asyncio.current_task()
        return await processor(job)

    body = JobBody(call_async if asynchronous else call_sync, sink.report_log,
                   backoff_strategy=spec["backoff_strategy"], hooks=spec.get("hooks") or ())
    signal.signal(signal.SIGUSR1, on_cancel)
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if msg[0] != "run":
            return  # "stop"
        _, seq, record = msg
        job = queue.job_class(queue, record, sink=sink)
        with cancels.get_lock():  # the parent decides under this lock whether it started
            skip = marked(seq)
            if not skip:
                cancels[STARTED] = seq
        current.update(seq=seq, job=job)
        if skip and job._cancel_requested is not None:
            job._cancel_requested.set()  # cancelled (or recalled) while held: never starts
        try:
            if asynchronous:
                assert loop is not None
                outcome, duration = loop.run_until_complete(body.run_async(record, job))
            else:
                outcome, duration = body.run(record, job)
        finally:
            current.clear()
        _end_descendants()  # the body's processes die with its job
        conn.send(("done", seq, outcome.kind, outcome.value, outcome.error_type,
                   outcome.retry_delay, outcome.stacktrace, duration))


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def _end_descendants() -> None:
    """Linux, in a child after each job: SIGKILL the processes its body left running (our
    children; orphans of a double fork too, as we are their subreaper), and reap them."""
    try:
        os.waitpid(-1, os.WNOHANG)  # one call says whether we have any child at all ...
    except ChildProcessError:
        return  # ... (most jobs): no scan of /proc, a file per thread
    for _ in range(5):  # a killed one's own children come to us next
        kids = _children()
        if not kids:
            break
        for pid in kids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in kids:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
    while True:  # and any other child that has ended
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def _children() -> set[int]:
    me = os.getpid()
    kids: set[int] = set()
    try:
        for tid in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{tid}/children") as f:
                kids.update(int(pid) for pid in f.read().split())
    except (OSError, ValueError):
        pass
    return kids
