"""IPython magics: ``%%enqueue`` (add jobs, or run the cell on a worker) and ``%nbqueue``.

Both are thin: they parse their line and call the public API (``nbqueue.queue_manager``).
IPython expands ``{var}`` in the magic's line (not in the cell body). Bad options raise
``UsageError``, which IPython shows as one line without a traceback.
"""

from __future__ import annotations

import argparse
import html
import shlex
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import MissingDependencyError

try:
    from IPython.core.error import UsageError
    from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
    from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
    from IPython.display import HTML, display
except ModuleNotFoundError as _exc:  # the core install: pip install nbqueue (no [notebook])
    raise MissingDependencyError("IPython", "nbqueue's magics (%load_ext nbqueue)") from _exc

from ..batch import JobBatch, is_frame
from ..durations import to_ms
from ..errors import (
    BatchNotFoundError,
    InvalidOptionError,
    JobNotFoundError,
    JobStateError,
    ResultTimeoutError,
    UnknownQueueError,
)
from ..liveness import no_worker_text
from ..types import JobState

__all__ = ["JobBatch", "NbqueueMagics"]  # JobBatch: nbqueue.batch, kept importable here

_FINISHED = (JobState.COMPLETED, JobState.FAILED)
POLL_S = 0.2


def _manager() -> Any:
    import nbqueue

    return nbqueue.queue_manager


def _usage(exc: Exception) -> UsageError:
    return UsageError(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))


def _progress_html(jobs: list[Any], elapsed: float) -> str:
    rows = []
    for j in jobs[:20]:
        p = j.progress if isinstance(j.progress, (int, float)) else 0
        p = 100 if j.state is JobState.COMPLETED else max(0, min(100, float(p)))
        rows.append(f"<tr><td>{html.escape(j.queue_name)}:{html.escape(j.id)}</td>"
                    f"<td>{html.escape(j.state.value)}</td>"
                    f"<td><progress value='{p:.0f}' max='100'></progress> {p:.0f}%</td></tr>")
    more = f"<tr><td colspan=3>... {len(jobs) - 20} more</td></tr>" if len(jobs) > 20 else ""
    return (f"<div class='nbqueue-wait'><table>{''.join(rows)}{more}</table>"
            f"<small>{elapsed:.1f}s</small></div>")


def wait_for(jobs: list[Any], timeout_s: float | None) -> list[Any]:
    """Block until every job finished, with a live progress display; their results.

    Raises ``TimeoutError`` when ``timeout_s`` passes first and ``JobFailedError`` for a
    failed job (as ``job.result()`` does).
    """
    from ..kernel import process_ui_events, waiting

    with waiting():
        return _wait_for(jobs, timeout_s, process_ui_events)


def _wait_for(jobs: list[Any], timeout_s: float | None, poll_ui: Any) -> list[Any]:
    start = time.monotonic()
    handle = display(HTML(_progress_html(jobs, 0.0)), display_id=True)
    while True:
        poll_ui()  # dashboard clicks take effect while the cell waits
        for j in jobs:
            if j.state not in _FINISHED:
                j.refresh()
        elapsed = time.monotonic() - start
        if handle is not None:
            handle.update(HTML(_progress_html(jobs, elapsed)))
        if all(j.state in _FINISHED for j in jobs):
            break
        if timeout_s is not None and elapsed >= timeout_s:
            left = sum(j.state not in _FINISHED for j in jobs)
            queues = {j.queue.name: j.queue for j in jobs if j.state not in _FINISHED}
            idle = [name for name, q in queues.items() if not q.get_workers()]
            why = (no_worker_text(idle) if idle else
                   "they keep running; use job.result() to wait again")
            raise ResultTimeoutError(f"{left} job(s) not finished after {timeout_s:g}s "
                                     f"({why})")
        time.sleep(POLL_S)
    return [j.result(timeout=0) for j in jobs]


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if args.priority is not None:
        p = args.priority
        opts["priority"] = int(p) if p.isdigit() else p.upper()
    if args.delay is not None:
        opts["delay"] = to_ms(args.delay, "--delay")
    if args.attempts is not None:
        opts["attempts"] = args.attempts
    if args.job_id is not None:
        opts["job_id"] = args.job_id
    return opts


def _datas(value: Any, job_type: str | None) -> tuple[list[dict[str, Any]], bool]:
    """Job data list from the cell's value, and whether it was a single dict."""
    def one(v: Any) -> dict[str, Any]:
        if not isinstance(v, Mapping):
            raise UsageError(f"%%enqueue: each job must be a dict, got {type(v).__name__}")
        if job_type is not None:
            return {"type": job_type, "payload": dict(v)}
        if "type" in v:
            return dict(v)
        return {"type": "job", "payload": dict(v)}

    if isinstance(value, Mapping):
        return [one(value)], True
    if type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas"):
        raise UsageError("%%enqueue: the cell gave a pandas DataFrame: split it into jobs "
                         "with %%enqueue QUEUE --chunks N (or Queue.map(df, chunksize=N)), "
                         'or make the cell give df.to_dict("records") (one job per row)')
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise UsageError("%%enqueue: the cell must evaluate to a dict (one job) or an "
                         f"iterable of dicts (bulk), not {type(value).__name__}")
    return [one(v) for v in value], False


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` instead of exiting."""

    def error(self, message: str) -> Any:
        raise UsageError(f"%nbqueue: {message} (see %nbqueue?)")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise _HelpShown()


class _HelpShown(Exception):
    pass


def _nbqueue_parser() -> _Parser:
    p = _Parser(prog="%nbqueue", add_help=True)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser("status", help="counts of queues as a DataFrame")
    s.add_argument("queues", nargs="*")
    s = sub.add_parser("jobs", help="jobs of a queue as a DataFrame")
    s.add_argument("queue")
    s.add_argument("--state", "-s", action="append",
                   help="waiting|active|delayed|completed|failed (repeatable or a,b)")
    s.add_argument("--limit", "-n", type=int, default=100, help="jobs in total (0: all)")
    s.add_argument("--all", "-a", action="store_true", help="every column, not the concise set")
    s = sub.add_parser("dashboard", help="the live widget panel")
    s.add_argument("queues", nargs="*")
    s.add_argument("--refresh", type=float, default=1.0)
    s = sub.add_parser("worker", help="start|stop|list workers of this kernel")
    s.add_argument("action", choices=["start", "stop", "list"])
    s.add_argument("queue", nargs="?")
    s.add_argument("--concurrency", "-c", type=int, default=None)
    s.add_argument("--mode", "-m", choices=["thread", "asyncio", "process"], default="thread")
    s.add_argument("--processor", "-p", default=None,
                   help="name of a function in the notebook (default: the registered one)")
    s.add_argument("--allow-code", action="store_true", help="also run %%%%enqueue --run jobs")
    s.add_argument("--detach", action="store_true",
                   help="with --mode process: a worker that outlives this kernel")
    for name, helptext in (("pause", "pause a queue"), ("resume", "resume a queue"),
                           ("retry", "move failed jobs back to wait")):
        sub.add_parser(name, help=helptext).add_argument("queue")
    s = sub.add_parser("batch", help="a named batch (Queue.map(..., name=)) of any kernel")
    s.add_argument("queue")
    s.add_argument("name")
    s = sub.add_parser("promote", help="run a delayed job now")
    s.add_argument("queue")
    s.add_argument("job_id")
    s = sub.add_parser("priority", help="change the priority of a waiting or delayed job")
    s.add_argument("queue")
    s.add_argument("job_id")
    s.add_argument("priority", help="critical|high|normal|low|background or 1..5")
    s.add_argument("--lifo", action="store_true", help="to the front of its new level")
    s = sub.add_parser("logs", help="a job's log (job.log, captured print/logging output)")
    s.add_argument("queue")
    s.add_argument("job_id")
    s = sub.add_parser("cancel", help="cancel a job (waiting/delayed: at once; active: its "
                                      "worker stops it)")
    s.add_argument("queue")
    s.add_argument("job_id")
    s = sub.add_parser("workers", help="registered workers (any process or host) as a "
                                       "DataFrame")
    s.add_argument("queues", nargs="*")
    s = sub.add_parser("drain", help="remove waiting jobs")
    s.add_argument("queue")
    s.add_argument("--delayed", action="store_true", help="delayed jobs too")
    s = sub.add_parser("clean", help="remove finished jobs")
    s.add_argument("queue")
    s.add_argument("--state", default="completed", choices=["completed", "failed"])
    s.add_argument("--grace", default="0", help="only older than this (e.g. 1h)")
    s.add_argument("--limit", type=int, default=0)
    return p


class JobLogView:
    """What ``%nbqueue logs`` shows: the job's log lines, as text or an HTML block."""

    def __init__(self, queue: str, job_id: str, lines: list[str]) -> None:
        self.queue, self.job_id, self.lines = queue, job_id, lines

    def __repr__(self) -> str:
        head = f"log of job {self.job_id} of {self.queue!r} ({len(self.lines)} lines)"
        return "\n".join([head, *self.lines])

    def _repr_html_(self) -> str:
        import html as _html

        body = _html.escape("\n".join(self.lines)) or "<i>(empty)</i>"
        return (f"<div class='nbqueue-logs'><b>log of job {_html.escape(self.job_id)} of "
                f"{_html.escape(self.queue)}</b><pre>{body}</pre></div>")


@magics_class
class NbqueueMagics(Magics):
    """``%%enqueue`` and ``%nbqueue`` (loaded by ``%load_ext nbqueue``)."""

    @property
    def _ns(self) -> dict[str, Any]:
        """The notebook's namespace (magics are always bound to a shell)."""
        assert self.shell is not None
        return self.shell.user_ns

    @magic_arguments()
    @argument("queue", help="the queue's name")
    @argument("--type", "-t", dest="job_type", default=None,
              help="job type; the cell's value becomes data['payload'] "
                   "(without it a dict with a 'type' key is the job data as-is)")
    @argument("--priority", "-p", default=None,
              help="critical|high|normal|low|background or 1..5 (1 runs first)")
    @argument("--delay", "-d", default=None, help="run no sooner than this: 500, 30s, 5m, 2h")
    @argument("--attempts", "-a", type=int, default=None, help="runs in total (retries + 1)")
    @argument("--job-id", default=None, help="custom id; re-running returns the existing job")
    @argument("--name", "-n", default=None, help="store the job handle(s) in this variable")
    @argument("--chunks", "-c", type=int, default=None,
              help="Queue.map: one job per N rows of a DataFrame value, or per N dicts "
                   "of a list")
    @argument("--wait", "-w", action="store_true",
              help="block with a live progress display and return the result")
    @argument("--timeout", default=None, help="with --wait/--out: give up after this (e.g. 30s)")
    @argument("--run", action="store_true",
              help="run the cell's code on a worker started with allow_code=True (signed)")
    @argument("--out", "-o", default=None,
              help="with --run: wait and store the value of the cell's last expression here")
    @cell_magic
    def enqueue(self, line: str, cell: str) -> Any:
        """Add the cell's value as job(s) to QUEUE, or run the cell on a worker (--run).

        The cell is a Python expression evaluated in the notebook's namespace: a dict is one
        job, an iterable of dicts is a bulk add (one round trip). ``{var}`` in the options
        line is expanded by IPython. Examples::

            %%enqueue emails --type send --priority high --delay 5m --name job
            {"to": "a@example.com"}

            %%enqueue compute --run --out answer
            sum(range(10))
        """
        args = parse_argstring(self.enqueue, line)
        if args.out and not args.run:
            raise UsageError("%%enqueue: --out needs --run (use --name to keep a job handle)")
        if args.attempts is not None and args.attempts < 1:
            raise UsageError("%%enqueue: --attempts must be >= 1")
        try:
            opts = _job_options(args)
            timeout_s = None if args.timeout is None else to_ms(args.timeout, "--timeout") / 1000
            queue = _manager().get_queue(args.queue)
        except (InvalidOptionError, UnknownQueueError) as exc:
            raise _usage(exc) from None
        datas: list[Any] = []
        if args.run:
            single = True
        else:
            if not cell.strip():
                raise UsageError("%%enqueue: the cell is empty; write a dict (or a list of "
                                 "dicts) to enqueue")
            value = self.shell.ev(cell.strip()) if self.shell is not None else eval(cell)
            if args.chunks is not None and args.chunks < 1:
                raise UsageError("%%enqueue: --chunks must be >= 1 (rows or items per job)")
            if args.chunks is not None:  # a DataFrame without --chunks: _datas says so
                return self._map(args, queue, value, opts, timeout_s)
            datas, single = _datas(value, args.job_type)
        if not single and args.job_id is not None:
            raise UsageError("%%enqueue: --job-id applies to one job, not a bulk add")
        try:
            if args.run:
                from ..codejobs import add_code_job

                if args.job_id is not None:
                    raise UsageError("%%enqueue: --run picks the job id it signs; drop --job-id")
                opts.pop("job_id", None)
                jobs = [add_code_job(queue, cell, **opts)]
            elif single:
                jobs = [queue.add(datas[0], **opts)]
            else:
                jobs = queue.add_bulk(datas, **opts)
        except InvalidOptionError as exc:
            raise _usage(exc) from None
        if not single:
            return self._bulk_done(args, jobs, timeout_s)
        handle: Any = jobs[0]
        if args.name:
            self._ns[args.name] = handle
        if args.out:
            self._ns[args.out] = wait_for(jobs, timeout_s)[0]
            return None
        if args.wait:
            return wait_for(jobs, timeout_s)[0]
        return handle

    def _map(self, args: argparse.Namespace, queue: Any, value: Any, opts: dict[str, Any],
             timeout_s: float | None) -> Any:
        """``%%enqueue QUEUE --chunks N``: ``Queue.map`` over a DataFrame or a list."""
        if args.job_id is not None:
            raise UsageError("%%enqueue: --job-id applies to one job, not a map")
        if isinstance(value, Mapping):
            raise UsageError("%%enqueue: --chunks takes a DataFrame or a list of dicts, not "
                             "one dict")
        if not is_frame(value):
            value, _ = _datas(value, args.job_type)
        try:
            batch = queue.map(value, chunksize=args.chunks, job_type=args.job_type, **opts)
        except (InvalidOptionError, TypeError) as exc:
            raise _usage(exc) from None
        return self._bulk_done(args, batch, timeout_s)

    def _bulk_done(self, args: argparse.Namespace, batch: Any,
                   timeout_s: float | None) -> Any:
        if args.name:
            self._ns[args.name] = batch
        if args.wait:
            return batch.wait(timeout_s, progress=True).results()
        return batch

    @line_magic
    def nbqueue(self, line: str) -> Any:
        """Inspect and control queues.

        %nbqueue status [QUEUE ...]            counts (DataFrame; all queues of this kernel)
        %nbqueue jobs QUEUE [--state S] [--limit N] [--all]   jobs (DataFrame)
        %nbqueue dashboard [QUEUE ...] [--refresh S]  the live widget panel
        %nbqueue worker start QUEUE [--concurrency N] [--mode thread|asyncio|process]
                                    [--processor FUNC] [--allow-code]
        %nbqueue worker stop QUEUE|ID | worker list   (ID: any registered worker)
        %nbqueue worker start QUEUE --mode process --detach   (outlives the kernel)
        %nbqueue pause|resume|retry QUEUE
        %nbqueue batch QUEUE NAME   a named batch (map(..., name=NAME)) from any kernel
        %nbqueue promote QUEUE JOB_ID              run a delayed job now
        %nbqueue priority QUEUE JOB_ID PRIORITY [--lifo]   re-prioritise a waiting/delayed job
        %nbqueue logs QUEUE JOB_ID      the job's log: job.log() and its print/logging output
        %nbqueue cancel QUEUE JOB_ID    cancel a job (active: its worker stops it)
        %nbqueue workers [QUEUE ...]    registered workers of any process/host (DataFrame)
        %nbqueue drain QUEUE [--delayed]
        %nbqueue clean QUEUE [--state completed|failed] [--grace 1h] [--limit N]
        """
        parser = _nbqueue_parser()
        try:
            args = parser.parse_args(shlex.split(line))
        except _HelpShown:
            return None
        except ValueError as exc:  # shlex: unbalanced quotes
            raise UsageError(f"%nbqueue: {exc}") from None
        try:
            return getattr(self, f"_cmd_{args.command}")(args)
        except (InvalidOptionError, UnknownQueueError, JobStateError,
                JobNotFoundError, BatchNotFoundError) as exc:
            raise _usage(exc) from None

    # -- %nbqueue subcommands -----------------------------------------------------------
    def _cmd_status(self, args: argparse.Namespace) -> Any:
        m = _manager()
        for name in args.queues:
            m.get_queue(name)
        return m.metrics_frame(args.queues or None)

    def _cmd_jobs(self, args: argparse.Namespace) -> Any:
        states = None
        if args.state:
            states = [s.strip() for item in args.state for s in item.split(",") if s.strip()]
            valid = {s.value for s in JobState} - {"unknown", "paused"}
            bad = [s for s in states if s not in valid]
            if bad:
                raise UsageError(f"%nbqueue jobs: unknown state {bad[0]!r}; use one of "
                                 f"{', '.join(sorted(valid))}")
        return _manager().get_queue(args.queue).jobs_frame(
            states, args.limit, columns="all" if args.all else None)

    def _cmd_dashboard(self, args: argparse.Namespace) -> Any:
        from .dashboard import Dashboard

        return Dashboard(args.queues or None, refresh=args.refresh)

    def _cmd_worker(self, args: argparse.Namespace) -> Any:
        m = _manager()
        if args.action == "list":
            return {name: repr(w) for name, w in sorted(m.workers.items())}
        if not args.queue:
            raise UsageError(f"%nbqueue worker {args.action}: name the queue")
        if args.action == "stop":
            if args.queue in m.workers:
                m.stop_worker(args.queue)
                print(f"stopped the worker of {args.queue!r}")
                return None
            # a worker id from `%nbqueue workers` (detached, another kernel, a terminal)
            from ..detached import stop_by_id

            queue, left = stop_by_id(m.connection, args.queue, timeout=60.0, prefix=m.prefix)
            if queue is None:
                print(f"no worker of this kernel runs for {args.queue!r}, and no registered "
                      f"worker has that id (see %nbqueue workers)")
            elif left:
                print(f"stopped worker {args.queue} of {queue!r}")
            else:
                print(f"asked worker {args.queue} of {queue!r} to stop; it is still "
                      "finishing its active jobs")
            return None
        processor = None
        if args.processor:
            if args.processor not in self._ns:
                raise UsageError(f"%nbqueue worker start: no variable {args.processor!r} "
                                 "in the notebook")
            processor = self._ns[args.processor]
            if not callable(processor):
                raise UsageError(f"%nbqueue worker start: {args.processor!r} is not callable")
        m.get_queue(args.queue)
        options: dict[str, Any] = {"allow_code": True} if args.allow_code else {}
        if args.detach:
            if args.mode != "process":
                raise UsageError("%nbqueue worker start --detach runs a process-mode worker: "
                                 "add --mode process")
            options["detach"] = True
        try:
            return m.start_worker(args.queue, args.concurrency, mode=args.mode,
                                  processor=processor, **options)
        except UnknownQueueError as exc:
            raise _usage(exc) from None

    def _simple(self, args: argparse.Namespace) -> Any:
        q = _manager().get_queue(args.queue)
        if args.command == "pause":
            q.pause()
            print(f"paused {q.name!r}")
            return None
        if args.command == "resume":
            q.resume()
            print(f"resumed {q.name!r}")
            return None
        n = q.retry_failed()
        print(f"{n} failed job(s) of {q.name!r} moved back to wait")
        return n

    _cmd_pause = _cmd_resume = _cmd_retry = _simple

    def _cmd_batch(self, args: argparse.Namespace) -> Any:
        """The named batch (a ``JobBatch``: wait, results, results_frame...)."""
        return _manager().get_queue(args.queue).get_batch(args.name)

    def _cmd_promote(self, args: argparse.Namespace) -> Any:
        _manager().get_queue(args.queue).promote(args.job_id)
        print(f"promoted job {args.job_id} of {args.queue!r}: it waits no longer")

    def _cmd_priority(self, args: argparse.Namespace) -> Any:
        from ..options import parse_priority

        prio = parse_priority(args.priority)
        _manager().get_queue(args.queue).change_priority(args.job_id, prio, args.lifo)
        print(f"job {args.job_id} of {args.queue!r} now has priority {prio}")

    def _cmd_logs(self, args: argparse.Namespace) -> Any:
        q = _manager().get_queue(args.queue)
        if q.get_job(args.job_id) is None:
            raise JobNotFoundError(f"job {args.job_id} not found in queue {args.queue!r}")
        return JobLogView(args.queue, args.job_id, q.get_job_logs(args.job_id))

    def _cmd_cancel(self, args: argparse.Namespace) -> Any:
        if _manager().get_queue(args.queue).cancel(args.job_id):
            print(f"job {args.job_id} of {args.queue!r}: cancelled (an active job ends once "
                  "its worker has stopped it)")
        else:
            print(f"job {args.job_id} of {args.queue!r} had finished already: nothing to "
                  "cancel")

    def _cmd_workers(self, args: argparse.Namespace) -> Any:
        from ..frames import workers_frame

        m = _manager()
        names = list(args.queues)
        if not names:
            from ..metrics import discover_queues

            names = sorted(set(m.queues) | set(discover_queues(m.connection.sync(), m.prefix)))
        return workers_frame([(name, w) for name in names
                              for w in m.get_queue(name).get_workers()])

    def _cmd_drain(self, args: argparse.Namespace) -> Any:
        n = _manager().get_queue(args.queue).drain(args.delayed)
        print(f"removed {n} job(s) from {args.queue!r}")
        return n

    def _cmd_clean(self, args: argparse.Namespace) -> Any:
        n = _manager().get_queue(args.queue).clean(args.grace, args.limit, args.state)
        print(f"cleaned {n} {args.state} job(s) of {args.queue!r}")
        return n

