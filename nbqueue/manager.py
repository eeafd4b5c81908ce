"""``QueueManager``: the seed's facade over queues and workers, keyed by queue name.

The same class serves the blocking API and ``nbqueue.aio``: its methods return what the
underlying ``Queue`` returns (a value, or an awaitable for ``aio.Queue``).
"""

from __future__ import annotations

import atexit
import signal
import threading
import warnings
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from .connection import Connection, connect
from .errors import UnknownQueueError
from .keys import DEFAULT_PREFIX, validate_queue_name
from .predefined import QUEUE_CONFIGS, QueueName
from .processor import Processor
from .protocol import by_name
from .queue import Queue, QueueBase
from .worker import Worker, WorkerBase

if TYPE_CHECKING:
    import pandas as pd

    from .detached import DetachedWorker

_MANAGERS: weakref.WeakSet[ManagerBase[Any, Any]] = weakref.WeakSet()

Q = TypeVar("Q", bound=QueueBase[Any, Any])
W = TypeVar("W", bound=WorkerBase)


class ManagerBase(Generic[Q, W]):
    """Owns the queues and workers of one connection, by name. ``QueueManager`` (blocking)
    and ``nbqueue.aio.QueueManager`` bind the per-queue operations to their queue class."""

    queue_class: type[Q]
    worker_class: type[W]

    def __init__(self, connection: Connection | str | None = None, *,
                 prefix: str = DEFAULT_PREFIX) -> None:
        self._connection_arg = connection
        self.prefix = prefix
        self._queues: dict[str, Q] = {}
        self._processors: dict[str, tuple[Processor, dict[str, Any]]] = {}
        self._workers: dict[str, W] = {}
        self._lock = threading.RLock()
        _MANAGERS.add(self)

    @property
    def connection(self) -> Connection:
        """Resolved on first use (``connect()``: URL, env, or the embedded server)."""
        with self._lock:
            if not isinstance(self._connection_arg, Connection):
                self._connection_arg = connect(self._connection_arg)
            return self._connection_arg

    def _known_defaults(self, name: str) -> dict[str, Any] | None:
        """Settings of a predefined queue (the seed's table), if ``name`` is one."""
        cfg = QUEUE_CONFIGS.get(name)
        return dict(cfg) if cfg is not None else None

    # -- queues --------------------------------------------------------------------------
    def get_queue(self, name: str, worker_concurrency: int | None = None,
                  rate_limiter: Mapping[str, int] | None = None,
                  default_job_options: Mapping[str, Any] | None = None,
                  **queue_options: Any) -> Q:
        """The queue ``name``, created on first call; later calls may change its settings."""
        name = validate_queue_name(name)
        with self._lock:
            existing = self._queues.get(name)
            given = {k: v for k, v in dict(
                worker_concurrency=worker_concurrency, rate_limiter=rate_limiter,
                default_job_options=default_job_options, **queue_options).items()
                if v is not None}
            if existing is not None and not given:
                return existing
            settings = self._known_defaults(name) or {}
            if existing is not None:
                settings.update(worker_concurrency=existing.worker_concurrency,
                                default_job_options=existing.default_job_options)
                if existing.global_concurrency is not None:
                    settings["global_concurrency"] = existing.global_concurrency
                if existing.rate_limiter is not None:
                    settings["rate_limiter"] = {"max": existing.rate_limiter.max,
                                                "duration": existing.rate_limiter.duration}
            settings.update(given)
            queue = self.queue_class(name, self._connection_arg_for_queue(), prefix=self.prefix,
                                     **settings)
            self._queues[name] = queue
            return queue

    def _connection_arg_for_queue(self) -> Any:
        return self._connection_arg if isinstance(self._connection_arg, Connection) \
            else _LazyConnection(self)

    def queue(self, name: str) -> Q:
        """A queue this manager knows (or a predefined one); unknown names are an error."""
        if isinstance(name, QueueName):
            name = name.value
        with self._lock:
            q = self._queues.get(name)
        if q is not None:
            return q
        if isinstance(name, str) and self._known_defaults(name) is not None:
            return self.get_queue(name)
        if not isinstance(name, str):
            raise TypeError(f"queue name must be a str, not {type(name).__name__}")
        known = ", ".join(sorted(self._queues)) or "none yet"
        raise UnknownQueueError(
            f"unknown queue {name!r} (known: {known}); create it with "
            f"queue_manager.get_queue({name!r}) first")

    @property
    def queues(self) -> dict[str, Q]:
        return dict(self._queues)

    # -- workers -------------------------------------------------------------------------
    def register_processor(self, name: str, processor: Processor, **worker_options: Any) -> None:
        """Set the function that processes jobs of ``name`` (used by ``start_worker``)."""
        if not callable(processor):
            raise TypeError(f"processor must be callable, not {type(processor).__name__}")
        self.queue(name) if name in self._queues else self.get_queue(name)
        self._processors[name] = (processor, worker_options)

    def _build_worker(self, name: str, worker_concurrency: int | None, mode: str,
                      processor: Processor | None, options: dict[str, Any]) -> W:
        queue = self.queue(name)
        if processor is None and (name in self._processors or not options.get("allow_code")):
            if name not in self._processors:
                raise UnknownQueueError(
                    f"no processor registered for queue {name!r}; call "
                    f"queue_manager.register_processor({name!r}, fn) first")
            processor, registered = self._processors[name]
            options = {**registered, **options}
        concurrency = worker_concurrency or queue.worker_concurrency
        return self.worker_class(name, processor, self.connection, concurrency=concurrency,
                                 mode=mode, prefix=self.prefix, **options)

    def _reuse_worker(self, name: str, worker: W) -> W | None:
        """A running worker with the same settings is returned instead of a second one."""
        old = self._workers.get(name)
        if old is None or not old.is_running:
            return None
        same = (old.processor is worker.processor and old.mode == worker.mode
                and old.concurrency == worker.concurrency)
        if same:
            warnings.warn(f"a worker for {name!r} is already running; returning it",
                          stacklevel=3)
            return old
        warnings.warn(f"replacing the running worker for {name!r} (settings or processor "
                      "changed); the old one stops gracefully", stacklevel=3)
        return None

    @property
    def workers(self) -> dict[str, W]:
        return dict(self._workers)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop every worker this manager started (also run at interpreter exit)."""
        import sys

        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            try:
                w._stop(timeout)  # blocking in both APIs: this also runs at interpreter exit
            except Exception:  # shutting down: keep stopping the others
                pass
        panels = sys.modules.get("nbqueue.notebook.dashboard")
        if panels is not None:  # dashboards of this manager stop polling Redis
            panels.close_panels(self)

    def __repr__(self) -> str:
        return (f"<QueueManager queues={sorted(self._queues)} "
                f"workers={sorted(self._workers)}>")


class QueueManager(ManagerBase[Queue, Worker]):
    """Owns the queues and workers of one connection. ``queue_manager`` is the default one.

    Every operation of a ``Queue`` is here too, by queue name (the seed's API):
    ``add_job(name, data, **options)`` is ``get_queue(name).add(data, **options)``."""

    queue_class = Queue
    worker_class = Worker

    @overload
    def start_worker(self, name: str, worker_concurrency: int | None = None,
                     mode: str = "thread", processor: Processor | None = None, *,
                     detach: Literal[False] = False, **worker_options: Any) -> Worker: ...

    @overload
    def start_worker(self, name: str, worker_concurrency: int | None = None,
                     mode: str = "thread", processor: Processor | None = None, *,
                     detach: Literal[True], **worker_options: Any) -> DetachedWorker: ...

    def start_worker(self, name: str, worker_concurrency: int | None = None,
                     mode: str = "thread", processor: Processor | None = None, *,
                     detach: bool = False, **worker_options: Any) -> Worker | DetachedWorker:
        """Start a worker for ``name`` in the background and return it (idempotent).

        ``mode="process", detach=True``: a worker that outlives this process (the kernel),
        handed the processor over a pipe; returns a ``DetachedWorker`` once it is registered
        (``nbqueue.detached``). A running detached worker of the same ``name`` (default: the
        queue's name) is replaced."""
        worker = self._build_worker(name, worker_concurrency, mode, processor, worker_options)
        if detach:
            from .detached import start

            return start(worker, worker.name)
        with self._lock:
            reused = self._reuse_worker(name, worker)
            if reused is not None:
                return reused
            old = self._workers.pop(name, None)
            if old is not None:
                old.stop()
            self._workers[name] = worker
        return worker.start()

    def stop_worker(self, name: str, timeout: float | None = None) -> None:
        """Stop the worker of ``name`` started here (gracefully), if any (a detached worker:
        ``DetachedWorker.stop``, ``%nbqueue worker stop ID``, ``nbqueue workers stop ID``)."""
        with self._lock:
            worker = self._workers.pop(name, None)
        if worker is not None:
            worker.stop(timeout)

    # -- the seed's operations, by queue name --------------------------------------------
    add_job = by_name(Queue, Queue.add)
    add_jobs = by_name(Queue, Queue.add_bulk)
    map = by_name(Queue, Queue.map)
    get_batch = by_name(Queue, Queue.get_batch)
    get_queue_metrics = by_name(Queue, Queue.get_metrics)
    get_job_status = by_name(Queue, Queue.get_job_status)
    get_job = by_name(Queue, Queue.get_job)
    pause_queue = by_name(Queue, Queue.pause)
    resume_queue = by_name(Queue, Queue.resume)
    drain_queue = by_name(Queue, Queue.drain)
    clean_queue = by_name(Queue, Queue.clean)
    retry_failed_jobs = by_name(Queue, Queue.retry_failed)
    remove_job = by_name(Queue, Queue.remove)
    promote_job = by_name(Queue, Queue.promote)
    change_job_priority = by_name(Queue, Queue.change_priority)
    update_job_data = by_name(Queue, Queue.update_data)
    set_global_concurrency = by_name(Queue, Queue.set_global_concurrency)
    get_workers = by_name(Queue, Queue.get_workers)
    cancel_job = by_name(Queue, Queue.cancel)
    get_job_logs = by_name(Queue, Queue.get_job_logs)

    def metrics_frame(self, names: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per queue (its ``QueueMetrics``), as a DataFrame."""
        from .frames import metrics_frame

        names = list(names) if names is not None else sorted(self._queues)
        return metrics_frame([self.queue(n).get_metrics() for n in names])



class _LazyConnection:
    """Stands in for the manager's connection until a queue first does I/O."""

    def __init__(self, manager: ManagerBase[Any, Any]) -> None:
        self._manager: ManagerBase[Any, Any] = manager

    def resolve(self) -> Connection:
        return self._manager.connection


def _close_all() -> None:
    """At interpreter exit: stop every worker, handing unfinished jobs back to the queue."""
    try:
        # A kernel being shut down is also sent SIGINT; a KeyboardInterrupt here would cut
        # the hand-back short and leave jobs to the stalled sweep. We are exiting anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        pass  # not the main thread
    for m in list(_MANAGERS):
        m.close(timeout=1.0)  # a kernel shutting down waits only a few seconds


atexit.register(_close_all)
