"""Output capture: what a processor prints (or logs) goes to its job's log.

``sys.stdout`` and ``sys.stderr`` are replaced once, for the life of the process, by
proxies that look up the job *of the current context* (a ``ContextVar``: each job thread,
each asyncio task, a process-mode child's job) and send whole lines to that job's log;
everywhere else (the notebook's own cells, other threads) they write straight through to
the stream they wrap. Not a global swap per job: two jobs on two threads, and a cell
running meanwhile, each see their own output.

``logging`` output reaches the log the same way: handlers writing to ``sys.stderr`` /
``sys.stdout`` (the default "last resort" handler, ``basicConfig()``) write through the
proxies, and a ``StreamHandler`` made before the proxies were installed is pointed at them
(:func:`install`), so a record goes to the job's log once, formatted by the user's handler.
File handlers and the like are left alone.

Cost when nothing is printed: setting and resetting one ContextVar per job.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

LogSink = Callable[[str, str], None]
"""``report_log(job_id, line)``: the outbox's (thread-safe) entry point."""


class _JobOutput:
    """The output of one running job: partial lines per stream, sent line by line.

    Also the ``with`` block that routes output to it (:func:`job_output`): a plain class,
    not a generator context manager, and no dict until something is written, because
    every job enters one (about 10 calls fewer per job than ``@contextmanager``)."""

    __slots__ = ("_token", "job_id", "partial", "sink")

    def __init__(self, job_id: str, sink: LogSink) -> None:
        self.job_id = job_id
        self.sink = sink
        self.partial: dict[str, str] | None = None

    def __enter__(self) -> None:
        self._token = _current.set(self)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
        if self.partial is not None:
            self.flush_partial()

    def write(self, stream: str, text: str) -> None:
        if self.partial is None:
            self.partial = {}
        buffered = self.partial.get(stream, "") + text
        if "\n" not in buffered:
            self.partial[stream] = buffered
            return
        *lines, rest = buffered.split("\n")
        self.partial[stream] = rest
        for line in lines:
            self.sink(self.job_id, line)

    def flush_partial(self) -> None:
        if self.partial is None:
            return
        for rest in self.partial.values():
            if rest:
                self.sink(self.job_id, rest)
        self.partial.clear()


_current: contextvars.ContextVar[_JobOutput | None] = contextvars.ContextVar(
    "nbqueue_job_output", default=None)


class JobStream:
    """A stand-in for ``sys.stdout``/``sys.stderr`` that routes writes by current job."""

    def __init__(self, wrapped: TextIO, name: str) -> None:
        self._wrapped = wrapped
        self._name = name

    @property
    def wrapped(self) -> TextIO:
        return self._wrapped

    def write(self, text: str) -> int:
        out = _current.get()
        if out is None:
            return self._wrapped.write(text)
        out.write(self._name, str(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _current.get() is None:
            self._wrapped.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno...
        return getattr(self._wrapped, name)


_install_lock = threading.Lock()


def install() -> None:
    """Put the proxies in place (idempotent; again if something replaced them since)."""
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is None or isinstance(stream, JobStream):
                continue
            proxy = JobStream(stream, name)
            setattr(sys, name, proxy)
            _repoint_handlers(stream, proxy)


def _repoint_handlers(old: TextIO, proxy: JobStream) -> None:
    """StreamHandlers made before the proxies hold the raw stream: point them at it."""
    loggers: list[Any] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values()
                if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in lg.handlers:
            if type(handler) is logging.StreamHandler and handler.stream is old:
                handler.setStream(proxy)


job_output = _JobOutput
"""``with job_output(job_id, sink):`` within this block (this thread / task / context),
output goes to ``job_id``'s log (lines not ended by a newline are sent at its end)."""
