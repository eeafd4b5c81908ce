"""``Worker``: the public front. Validates options and runs an engine in a thread, on the
caller's event loop, in the foreground, or in child processes."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

from ..backoff import BackoffStrategy
from ..codejobs import wrap_processor
from ..connection import Connection, connect
from ..durations import to_ms
from ..errors import InvalidOptionError, NbqueueError
from ..keys import DEFAULT_PREFIX, validate_queue_name
from ..processor import Processor
from . import process
from .body import JobHook, check_hooks
from .engine import Engine
from .prefetch import PrefetchArg, check_prefetch
from .upkeep import HEARTBEAT_MS

log = logging.getLogger("nbqueue.worker")

MODES = ("thread", "asyncio", "process")


class WorkerBase:
    """What ``Worker`` and ``nbqueue.aio.Worker`` share: options, the engine, the modes.

    The lifecycle steps here block (``_start``, ``_run``, ``_stop``); ``Worker`` exposes them
    as is, ``nbqueue.aio.Worker`` as awaitables."""

    def __init__(self, queue_name: str, processor: Processor | None,
                 connection: Connection | str | None = None, *, concurrency: int = 1,
                 mode: str = "thread", prefix: str = DEFAULT_PREFIX,
                 lock_duration: Any = 30_000, stalled_interval: Any = 30_000,
                 max_stalled_count: int = 1, backoff_strategy: BackoffStrategy | None = None,
                 dead_letter: bool = True, grace: float = 30.0, processes: int | None = None,
                 name: str | None = None, allow_code: bool = False,
                 secret: str | bytes | None = None, prefetch: PrefetchArg = "auto",
                 heartbeat_interval: Any = HEARTBEAT_MS,
                 hooks: Sequence[JobHook] | None = None) -> None:
        queue_name = validate_queue_name(queue_name)
        if allow_code:
            # Code jobs (%%enqueue --run) are opt-in and must carry a valid HMAC signature.
            processor = wrap_processor(processor, secret)
        if not callable(processor):
            raise TypeError(f"processor must be callable, not {type(processor).__name__}")
        if mode not in MODES:
            raise InvalidOptionError(f"mode must be one of {', '.join(MODES)}: {mode!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidOptionError(f"concurrency must be an int >= 1: {concurrency!r}")
        if isinstance(max_stalled_count, bool) or not isinstance(max_stalled_count, int) \
                or max_stalled_count < 0:
            raise InvalidOptionError(f"max_stalled_count must be an int >= 0: "
                                     f"{max_stalled_count!r}")
        self.queue_name = queue_name
        self.processor: Processor = processor
        self._connection_arg = connection
        self.concurrency = concurrency
        self.mode = mode
        if processes is not None and (isinstance(processes, bool)
                                      or not isinstance(processes, int) or processes < 1):
            raise InvalidOptionError(f"processes must be an int >= 1: {processes!r}")
        # Process mode runs one job per child at a time (see process.py): as many children
        # as jobs at once, max(concurrency, processes); ``processes`` is kept for callers
        # that used it to size the pool.
        self.processes = max(concurrency, processes or 0)
        if mode == "process":
            self.concurrency = self.processes
        self.name = name
        self._engine_kwargs: dict[str, Any] = dict(
            prefix=prefix, lock_duration=to_ms(lock_duration, "lock_duration", allow_zero=False),
            stalled_interval=to_ms(stalled_interval, "stalled_interval", allow_zero=False),
            max_stalled_count=max_stalled_count, backoff_strategy=backoff_strategy,
            dead_letter=dead_letter, grace=grace, prefetch=check_prefetch(prefetch), mode=mode,
            heartbeat_interval=to_ms(heartbeat_interval, "heartbeat_interval",
                                     allow_zero=False))
        # per-job hooks (``body.JobHook``): before(job) / after(job, outcome), every mode
        self.hooks = check_hooks(hooks)
        self.engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    @property
    def connection(self) -> Connection:
        if not isinstance(self._connection_arg, Connection):
            self._connection_arg = connect(self._connection_arg)
        return self._connection_arg

    def _new_engine(self, concurrency: int) -> Engine:
        payload = None
        if self.mode == "process":
            payload = process.child_payload(
                self.processor, connection=self.connection.spec(),
                queue_name=self.queue_name, prefix=self._engine_kwargs["prefix"],
                backoff_strategy=self._engine_kwargs["backoff_strategy"],
                store=self.connection.store, hooks=self.hooks)
        return Engine(self.queue_name, self.processor, self.connection,
                      concurrency=concurrency, worker_name=self.name, process_payload=payload,
                      hooks=self.hooks, **self._engine_kwargs)

    @property
    def is_running(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        if self._task is not None:
            return not self._task.done()
        return False

    @property
    def child_pids(self) -> list[int]:
        """Process mode: the pids of the executor children running job bodies now."""
        runner = self.engine.jobs.runner if self.engine is not None else None
        if not isinstance(runner, process.ProcessRunner):
            return []
        return [c.proc.pid for c in runner.children]

    @property
    def processed(self) -> int:
        return self.engine.processed if self.engine else 0

    def _start(self) -> None:
        """Start in the background and return at once."""
        if self.is_running:
            return
        _ = self.connection  # resolve (and check) the connection in the caller's thread
        if self.mode == "asyncio" and _running_loop() is not None:
            self.engine = self._new_engine(self.concurrency)
            self._task = asyncio.ensure_future(self.engine.run())
        else:
            self.engine = self._new_engine(self.concurrency)
            ready = threading.Event()
            self._thread = threading.Thread(target=self._thread_main, args=(ready,),
                                            name=f"nbqueue-worker-{self.queue_name}",
                                            daemon=True)
            self._thread.start()
            ready.wait(5)

    def _thread_main(self, ready: threading.Event) -> None:
        assert self.engine is not None
        engine = self.engine

        async def main() -> None:
            # start() returns once the worker is registered (Queue.get_workers lists it)
            engine.on_registered = ready.set
            await engine.run()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by stop() and logged here
            self._error = exc
            log.exception("worker for %s died", self.queue_name)
        finally:
            ready.set()

    def _run(self) -> None:
        """Run in the foreground until ``stop()``, SIGINT or SIGTERM (the CLI uses this).

        SIGTERM/SIGINT stop gracefully in every mode: no new jobs, running ones finish
        within ``grace``, the rest go back to the queue; in process mode the children of
        jobs handed back are killed, and no child outlives this call."""
        self.engine = self._new_engine(self.concurrency)
        engine = self.engine

        async def main() -> None:
            loop = asyncio.get_running_loop()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, engine.request_stop)
            await engine.run()

        asyncio.run(main())

    def _stop(self, timeout: float | None = None) -> None:
        """Graceful stop: finish active jobs (hand back what outlives the grace period)."""
        wait = (timeout if timeout is not None else self._engine_kwargs["grace"]) + 10
        if self.engine is not None:
            self.engine.request_stop(timeout)
        if self._thread is not None:
            self._thread.join(wait)
            if self._thread.is_alive() and self.engine is not None:
                log.error("worker did not stop within %.0fs: %s", wait, self.engine.describe())
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise NbqueueError(f"the worker of {self.queue_name!r} had died: {err}") from err

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return (f"<Worker {self.queue_name!r} mode={self.mode} "
                f"concurrency={self.concurrency} {state}>")


class Worker(WorkerBase):
    """Processes the jobs of one queue with ``processor(job)`` (sync or async).

    ``start()`` returns at once (thread/asyncio/process modes); ``run()`` blocks until
    ``stop()`` or a signal; ``stop()`` is graceful: active jobs finish within ``grace``
    seconds, whatever still runs then goes back to the queue.

    Every worker registers in its queue's worker registry (``Queue.get_workers()``) and
    heartbeats every ``heartbeat_interval`` ms (default 5 s); a worker that dies drops out
    3 intervals after its last heartbeat, a stopped one at once. In process mode the
    parent (which runs the engine) is the registered worker; its children only run bodies.

    ``prefetch``: extra jobs held locked and ready, so a slot that frees up starts the next
    job without a round trip; it trades strict priority (a new CRITICAL job waits behind
    the held ones) for throughput. ``"auto"`` (default) holds just enough short jobs to
    hide the fetch round trip (none for jobs longer than a round trip, none when the queue
    runs dry: ``nbqueue.worker.prefetch``); an int holds that many; 0 holds none. In process
    mode each child also holds its next job while it runs one (same trade, one job per
    child: see ``nbqueue.worker.process``).

    ``hooks``: per-job hooks, objects with ``before(job)`` and ``after(job, outcome)``
    called around every attempt in the job's own context, in every mode (see
    ``nbqueue.worker.body``; process mode: picklable, run in the children).
    """

    def start(self) -> Worker:
        """Start in the background and return at once."""
        self._start()
        return self

    def run(self) -> None:
        """Run in the foreground until ``stop()``, SIGINT or SIGTERM (the CLI uses this)."""
        self._run()

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: finish active jobs (hand back what outlives the grace period)."""
        self._stop(timeout)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
