"""The threads that run sync processors: a minimal pool of *daemon* threads."""

from __future__ import annotations

import queue as queue_mod
import threading
from collections.abc import Callable


class JobThreads:
    """A minimal pool of daemon threads.

    ``ThreadPoolExecutor`` threads are joined at interpreter exit, so a job abandoned after
    the grace period (already handed back to the queue) kept a stopped worker process alive
    until its body returned, and ran on while another worker re-ran it. Daemon threads let
    the process exit; the abandoned body dies with it, exactly like a killed worker.
    ``size`` grows by one for each thread left running a timed-out job, so the worker keeps
    its concurrency.
    """

    def __init__(self, size: int, prefix: str) -> None:
        self.size, self._prefix = size, prefix
        self._work: queue_mod.SimpleQueue[Callable[[], None] | None] = queue_mod.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # One token per idle thread (a C-level queue: cheaper than a Semaphore per job).
        self._idle: queue_mod.SimpleQueue[None] = queue_mod.SimpleQueue()

    def submit(self, fn: Callable[[], None]) -> None:
        self._work.put(fn)
        try:
            self._idle.get_nowait()  # an idle thread will take it
            return
        except queue_mod.Empty:
            pass
        if len(self._threads) < self.size:
            t = threading.Thread(target=self._run, daemon=True,
                                 name=f"{self._prefix}_{len(self._threads)}")
            t.start()
            self._threads.append(t)

    def _run(self) -> None:
        while True:
            fn = self._work.get()
            if fn is None:
                return
            fn()
            del fn
            self._idle.put(None)

    def shutdown(self) -> None:
        while True:  # drop what has not started
            try:
                self._work.get_nowait()
            except queue_mod.Empty:
                break
        for _ in self._threads:
            self._work.put(None)
