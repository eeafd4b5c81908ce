"""The ``nbqueue`` command: worker, stats, workers, demo, server, metrics."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any

from .errors import InvalidOptionError, NbqueueError
from .tables import METRIC_COLUMNS, WORKER_COLUMNS, format_table


def _load_processor(spec: str) -> Any:
    """``module:function`` (or ``path/to/file.py:function``) -> the function; a spec that
    does not name one is an :class:`InvalidOptionError` saying why (one line)."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr or any(not part.isidentifier() for part in attr.split(".")):
        raise InvalidOptionError(f"--processor must look like module:function (or "
                                 f"path/to/file.py:function), not {spec!r}")
    try:
        fn = _import_attr(module_name, attr)
    except Exception as exc:  # whatever importing it raised: one line, no traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvalidOptionError(f"--processor {spec!r}: cannot load it "
                                 f"({type(exc).__name__}: {first})") from None
    if not callable(fn):
        raise InvalidOptionError(f"--processor {spec!r} is a {type(fn).__name__}, "
                                 "not a function")
    return fn


def _import_attr(module_name: str, attr: str) -> Any:
    if module_name.endswith(".py"):
        import pathlib
        from importlib import util

        path = pathlib.Path(module_name).resolve()
        loaded = util.spec_from_file_location(path.stem, path)
        if loaded is None or loaded.loader is None:
            raise ImportError(f"not a Python file: {module_name}")
        module = util.module_from_spec(loaded)
        sys.modules[path.stem] = module
        try:
            loaded.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(path.stem, None)
            raise
        # not importable by name elsewhere: process-mode children get its code by value
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    else:
        sys.path.insert(0, ".")
        module = importlib.import_module(module_name)
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part)
    return fn


def _grace(value: float) -> float:
    """``--grace``: seconds, a finite number >= 0 (``-1``, ``nan`` and ``inf`` are refused)."""
    if not math.isfinite(value) or value < 0:
        raise InvalidOptionError(f"--grace must be a finite number of seconds >= 0, not "
                                 f"{value!r}")
    return value


def _check_queue_names(args: argparse.Namespace) -> None:
    """Every queue name given on the command line is valid, before anything connects."""
    from .keys import validate_queue_name

    names = getattr(args, "queue", None)
    for name in ([names] if isinstance(names, str) else names or []):
        validate_queue_name(name)


def cmd_worker(args: argparse.Namespace) -> int:
    from .connection import connect
    from .worker import Worker

    _grace(args.grace)
    processor = _load_processor(args.processor) if args.processor else None
    if processor is None and not args.allow_code:
        raise SystemExit("--processor module:function is required (or --allow-code)")
    worker = Worker(args.queue, processor, connect(args.url), concurrency=args.concurrency,
                    mode=args.mode, processes=args.processes, grace=args.grace,
                    allow_code=args.allow_code)
    print(f"nbqueue worker: queue {args.queue!r}, {args.mode} mode, "
          f"concurrency {args.concurrency} (Ctrl-C to stop)", flush=True)
    if args.exit_when_idle is not None:
        _exit_when_idle(worker, args.exit_when_idle)
    worker.run()
    return 0


def _exit_when_idle(worker: Any, idle_s: float) -> None:
    """Stop ``worker`` (gracefully) once its queue has had no waiting, delayed or active
    job for ``idle_s`` seconds: a worker pod of a KEDA ScaledJob (contrib/keda) that drains
    the queue and ends."""
    import threading
    import time

    from .queue import Queue

    if idle_s < 0:
        raise SystemExit("--exit-when-idle takes seconds >= 0")
    name = worker.queue_name
    queue = Queue(name, worker.connection)

    def watch() -> None:
        idle_since: float | None = None
        while True:
            time.sleep(min(1.0, max(idle_s, 0.1)))
            try:
                m = queue.get_metrics()
            except Exception:  # Redis away: not idle, the worker's own retries apply
                idle_since = None
                continue
            if m.waiting or m.active or m.delayed:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            if idle_since is not None and time.monotonic() - idle_since >= idle_s:
                engine = worker.engine
                if engine is not None:
                    print(f"nbqueue worker: queue {name!r} idle for {idle_s:g} s, "
                          "exiting", flush=True)
                    engine.request_stop()
                    return

    threading.Thread(target=watch, name="nbqueue-exit-when-idle", daemon=True).start()


def cmd_stats(args: argparse.Namespace) -> int:
    from .connection import connect
    from .keys import validate_queue_name
    from .metrics import discover_queues, read_queues
    from .protocol import run_sync

    conn = connect(args.url)
    client = conn.sync()
    # the registry of queue names, then one pipeline: O(queues), not a SCAN of all keys
    names = args.queue or discover_queues(client)
    for name in names:
        validate_queue_name(name)
    data = run_sync(client, read_queues(names))
    rows = []
    for name in names:
        st = data[name]["states"]
        rows.append({"queue_name": name, **st, "paused": data[name]["paused"],
                     "total": st["waiting"] + st["active"] + st["delayed"]})
    print(format_table(rows, METRIC_COLUMNS) if rows else "no queues")
    return 0


def _stop_worker(conn: Any, worker_id: str, timeout: float) -> int:
    """``nbqueue workers stop ID``: any registered worker (a detached one, a CLI worker, a
    kernel's), on any host, through Redis; waits for it to finish its active jobs."""
    from .detached import stop_by_id

    queue, left = stop_by_id(conn, worker_id, timeout)
    if queue is None:
        print(f"no registered worker {worker_id!r} (see `nbqueue workers`)", file=sys.stderr)
        return 1
    if left:
        print(f"worker {worker_id} of {queue!r} stopped")
        return 0
    print(f"worker {worker_id} of {queue!r} was asked to stop and is still finishing its "
          f"active jobs after {timeout:g}s", file=sys.stderr)
    return 2


def cmd_workers(args: argparse.Namespace) -> int:
    """The registered workers of the queues (every process and host), one line each."""
    import datetime as dt

    from .connection import connect
    from .metrics import discover_queues
    from .queue import Queue

    conn = connect(args.url)
    if len(args.queue) == 2 and args.queue[0] == "stop":  # nbqueue workers stop ID
        return _stop_worker(conn, args.queue[1], args.timeout)
    client = conn.sync()
    names = args.queue or discover_queues(client)
    t = client.time()
    now = int(t[0]) * 1000 + int(t[1]) // 1000
    rows = []
    for name in names:
        for w in Queue(name, conn).get_workers():
            started = dt.datetime.fromtimestamp(w.started_at / 1000, dt.timezone.utc)
            rows.append({"queue": name, **{k: getattr(w, k) for k in (
                "id", "host", "pid", "mode", "concurrency", "active")},
                "started": started.strftime("%Y-%m-%d %H:%M:%SZ"),
                "heartbeat": f"{max(0, now - w.last_heartbeat) / 1000:.1f}s ago"})
    print(format_table(rows, WORKER_COLUMNS) if rows else "no workers")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from . import server

    if args.action == "start":
        print(server.ensure_server())
        return 0
    if args.action == "stop":
        print("stopped" if server.stop() else "not running")
        return 0
    status = server.status()
    for key, value in vars(status).items():
        print(f"{key:>18}: {value}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from .connection import connect
    from .metrics import make_metrics_server

    if not 0 <= args.port <= 65535:
        raise InvalidOptionError(f"--port must be 0..65535, not {args.port}")
    try:
        server = make_metrics_server(args.port, args.host, args.queue or None,
                                     connect(args.url))
    except OSError as exc:  # port in use, no such address, unknown host name
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise InvalidOptionError(f"cannot serve metrics on {args.host}:{args.port}: "
                                 f"{reason}") from None
    print(f"serving Prometheus metrics on http://{args.host}:{args.port}/metrics", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(jobs=args.jobs, url=args.url, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbqueue", description=__doc__)
    p.add_argument("--url", help="Redis URL (default: NBQUEUE_REDIS_URL, REDIS_URL, or the "
                   "embedded server)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a worker in the foreground")
    w.add_argument("queue")
    w.add_argument("--processor", "-p", help="module:function that processes a job")
    w.add_argument("--concurrency", "-c", type=int, default=1)
    w.add_argument("--mode", choices=("thread", "asyncio", "process"), default="asyncio")
    w.add_argument("--processes", type=int, default=None, help="children in process mode")
    w.add_argument("--grace", type=float, default=30.0, help="seconds to finish active jobs")
    w.add_argument("--allow-code", action="store_true", help="run signed code jobs")
    w.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit once the queue has had no waiting, delayed or active job "
                   "for SECONDS (a KEDA ScaledJob pod: contrib/keda)")
    w.set_defaults(func=cmd_worker)

    s = sub.add_parser("stats", help="print queue metrics")
    s.add_argument("queue", nargs="*")
    s.set_defaults(func=cmd_stats)

    wk = sub.add_parser("workers", help="list the workers registered for queues (any host); "
                        "a worker drops out when it misses heartbeats for its ttl")
    wk.add_argument("queue", nargs="*", help="queues to list (default: all); or "
                    "`stop ID`: stop that worker gracefully (any process or host)")
    wk.add_argument("--timeout", type=float, default=60.0,
                    help="with stop: seconds to wait for it to finish its active jobs")
    wk.set_defaults(func=cmd_workers)

    d = sub.add_parser("demo", help="a short end-to-end run on the embedded default Redis")
    d.add_argument("--jobs", type=int, default=12)
    d.add_argument("--keep", action="store_true",
                   help="keep the demo's queue and its dead-letter records afterwards")
    d.set_defaults(func=cmd_demo)

    srv = sub.add_parser("server", help="manage the embedded redis-server")
    srv.add_argument("action", choices=("status", "start", "stop"))
    srv.set_defaults(func=cmd_server)

    m = sub.add_parser("metrics", help="serve Prometheus metrics")
    m.add_argument("--port", type=int, default=9108)
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("queue", nargs="*")
    m.set_defaults(func=cmd_metrics)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        _check_queue_names(args)
        return int(args.func(args) or 0)
    except NbqueueError as exc:
        print(f"nbqueue: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
