"""Detached process workers: ``start_worker(name, mode="process", detach=True)``.

A worker that outlives the kernel. It runs in a process of its own session (a new session,
and re-parented away from the kernel by a double fork), so a kernel restart, crash or
``kill -9`` does not take it along. It gets the notebook's processor once, at start, over a
pipe (its stdin: cloudpickle, with the cells' source lines for its tracebacks, see
``nbqueue.sources``), never through Redis; then it runs as ``Worker(..., mode="process")
.run()`` does in a terminal: its own children run the job bodies, and SIGTERM stops it
gracefully. It registers in the queue's worker registry: ``get_workers()`` lists it with
``detached`` set to its name. It writes its log to ``<nbqueue home>/workers/<id>.log``
(``~/.cache/nbqueue/workers``).

Stopping: ``DetachedWorker.stop()``, ``%nbqueue worker stop ID`` or ``nbqueue workers stop
ID`` send a stop request through Redis (``nbqueue.reaper.request_stop``; from any process or
host), or SIGTERM. Starting again with the same name (by default, the queue's name) replaces
the running one: it finishes its active jobs and exits, the new one has the current function.
If it dies (``kill -9``, OOM), the jobs it held go back as soon as a worker on the same
machine notices (``nbqueue.reaper``), or at lock expiry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidOptionError, NbqueueError
from .protocol import run_sync
from .reaper import request_stop
from .sources import capture, restore

if TYPE_CHECKING:
    from .connection import Connection
    from .types import WorkerInfo
    from .worker import WorkerBase

START_TIMEOUT_S = 60.0  # imports, a fork, the first heartbeat: ~1 s on a quiet machine
POLL_S = 0.05


def log_dir() -> Path:
    """Where detached workers write their logs: ``<nbqueue home>/workers`` (see
    ``nbqueue.server.home_dir``: $NBQUEUE_HOME, else ~/.cache/nbqueue)."""
    from .server import home_dir

    return home_dir() / "workers"


@dataclass
class DetachedWorker:
    """A handle on a detached worker (from ``start_worker(..., detach=True)``, or
    ``DetachedWorker.find``): any process may hold one."""

    id: str
    name: str
    queue_name: str
    pid: int
    host: str
    log_path: str
    connection: Connection
    _prefix: str = "nbq"

    def info(self) -> WorkerInfo | None:
        """Its registration now (None once it has stopped or died and dropped out)."""
        from .queue import Queue

        q = Queue(self.queue_name, self.connection, prefix=self._prefix)
        return next((w for w in q.get_workers() if w.id == self.id), None)

    @property
    def is_running(self) -> bool:
        return self.info() is not None

    def stop(self, timeout: float | None = 60.0) -> bool:
        """Ask it to stop (gracefully: active jobs finish within its grace period) and wait
        up to ``timeout`` seconds (None: do not wait) for it to leave the registry. Returns
        whether it has left."""
        _, left = stop_by_id(self.connection, self.id, timeout, [self.queue_name],
                             self._prefix)
        return left

    @classmethod
    def find(cls, connection: Connection, queue_name: str, name: str,
             prefix: str = "nbq") -> list[DetachedWorker]:
        """The running detached workers of ``queue_name`` called ``name``."""
        from .queue import Queue

        q = Queue(queue_name, connection, prefix=prefix)
        return [cls(w.id, w.detached, queue_name, w.pid, w.host,
                    str(log_dir() / f"{w.id}.log"), connection, prefix)
                for w in q.get_workers() if w.detached == name]

    def __repr__(self) -> str:
        return (f"<DetachedWorker {self.id} of {self.queue_name!r} pid={self.pid} "
                f"log={self.log_path}>")


def stop_by_id(connection: Connection, worker_id: str, timeout: float | None = 60.0,
               queues: list[str] | None = None, prefix: str = "nbq") -> tuple[str | None, bool]:
    """Ask worker ``worker_id`` (any worker, any host: ``nbqueue.reaper.request_stop``) to
    stop gracefully; wait up to ``timeout`` s (None: not at all) for it to leave the
    registry. Returns (its queue, or None when no registry lists it; whether it has left)."""
    from .queue import Queue

    queue = run_sync(connection.sync(), request_stop(worker_id, queues, prefix=prefix))
    if queue is None:
        return None, True
    q = Queue(queue, connection, prefix=prefix)
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is not None and time.monotonic() < deadline:
        if all(w.id != worker_id for w in q.get_workers()):
            return queue, True
        time.sleep(0.1)
    return queue, False


def start(worker: WorkerBase, name: str | None = None,
          timeout: float = START_TIMEOUT_S) -> DetachedWorker:
    """Start ``worker`` (built and validated, not started) detached; returns once it is in
    the registry. A running detached worker of the same name is asked to stop first."""
    import cloudpickle

    if worker.mode != "process":
        raise InvalidOptionError(f"detach=True runs a process-mode worker that outlives the "
                                 f"kernel: pass mode='process', not {worker.mode!r}")
    conn = worker.connection
    name = name or worker.queue_name
    prefix = worker._engine_kwargs["prefix"]
    wid = f"detached-{uuid.uuid4().hex[:12]}"
    kwargs = {k: v for k, v in worker._engine_kwargs.items() if k != "mode"}
    spec = {"queue_name": worker.queue_name, "processor": worker.processor, "id": wid,
            "name": name, "url": conn.url, "cluster": conn.cluster, "store": conn.store,
            "connection": conn.spec(),  # with min_replicas (Connection.spec)
            "concurrency": worker.concurrency, "kwargs": kwargs,
            "sources": capture(worker.processor)}
    try:
        payload = cloudpickle.dumps(spec)
    except Exception as exc:
        raise TypeError(f"the processor of {worker.queue_name!r} cannot be handed to a "
                        f"detached worker (cloudpickle: {type(exc).__name__}: {exc}); define "
                        "it in the notebook or an importable module, and let it reach "
                        "connections, locks or open files from inside the function") from exc
    old = DetachedWorker.find(conn, worker.queue_name, name, prefix)
    for w in old:  # the same name: replaced (it finishes its jobs and exits)
        w.stop(timeout=None)
    logs = log_dir()
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{wid}.log"
    # the same nbqueue as this process, whatever its sys.path was made of
    here = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH", "")) if p)}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "nbqueue.detached"],
                                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    assert proc.stdin is not None
    try:
        proc.stdin.write(len(payload).to_bytes(8, "big") + payload)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it died at once: reported below from its log
    # the launcher forks the worker and exits at once (nothing of the kernel's is its parent)
    code = proc.wait(timeout)
    handle = DetachedWorker(wid, name, worker.queue_name, 0, "", str(log_path), conn, prefix)
    deadline = time.monotonic() + timeout
    while True:
        info = handle.info()
        if info is not None:
            handle.pid, handle.host = info.pid, info.host
            return handle
        if code != 0 or time.monotonic() > deadline or _log_says_ended(log_path):
            raise NbqueueError(f"the detached worker of {worker.queue_name!r} did not start "
                               f"(launcher exit code {code}); its log {log_path} ends:\n"
                               + _tail(log_path))
        time.sleep(POLL_S)


_ENDED = "nbqueue detached worker ended"


def _log_says_ended(path: Path) -> bool:
    return _ENDED in _tail(path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main() -> None:
    """``python -m nbqueue.detached``: read the hand-over from stdin, fork the worker away
    from the launcher (which exits), and run it until it is stopped."""
    import logging

    import cloudpickle

    size = int.from_bytes(sys.stdin.buffer.read(8), "big")
    payload = sys.stdin.buffer.read(size)
    if len(payload) != size:
        print(f"{_ENDED}: the hand-over was cut ({len(payload)} of {size} bytes)", flush=True)
        sys.exit(2)
    if os.fork() > 0:
        os._exit(0)  # the launcher: the kernel waits for it; the worker is re-parented
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    logging.basicConfig(level=os.environ.get("NBQUEUE_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = cloudpickle.loads(payload)
        restore(spec["processor"], spec.get("sources"))
        _run(spec)
    except BaseException as exc:
        print(f"{_ENDED} with an error: {type(exc).__name__}: {exc}", flush=True)
        raise
    print(f"{_ENDED} (id {spec['id']})", flush=True)


def _run(spec: dict[str, Any]) -> None:
    from .connection import Connection
    from .worker import Worker

    class _Detached(Worker):
        def _new_engine(self, concurrency: int) -> Any:
            engine = super()._new_engine(concurrency)
            engine.upkeep.info["detached"] = spec["name"]  # get_workers(): WorkerInfo.detached
            return engine

    conn = Connection.from_spec(spec["connection"], store=spec.get("store"))
    worker = _Detached(spec["queue_name"], spec["processor"], conn, mode="process",
                       concurrency=spec["concurrency"], name=spec["id"], **spec["kwargs"])
    print(f"nbqueue detached worker {spec['id']} (pid {os.getpid()}) of "
          f"{spec['queue_name']!r} started", flush=True)
    worker.run()


if __name__ == "__main__":
    main()
