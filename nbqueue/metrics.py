"""Prometheus metrics, read from Redis at scrape time.

Workers (thread, asyncio, subprocess, other machines) add their totals to each queue's
Redis ``stats`` hash in the same script that finishes the jobs, so Redis is the one source
of truth and a scrape of any process sees everything. :class:`QueueCollector` turns those
totals and the live queue depths into Prometheus series; register it in your own registry,
or run :func:`serve` (``nbqueue metrics --port 9108``).

Every per-queue series carries ``queue="<name>"``, so any two can be joined on it. The
seed's two counters keep their names and their ``tool_name="queue_<name>"`` label too.
:data:`SERIES` lists every family with its HELP text (docs/operations.md
explains each, with a PromQL cookbook).

Which queues: the registry of queue names (``nbq:queues``, see ``keys.registry_key``),
read with one SMEMBERS, then one read-only script per queue (``scripts/metrics.lua``):
a scrape costs O(queues), whatever the number of jobs in Redis. A Redis that has no
registry yet (data written by an older nbqueue) is SCANned once and the registry filled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .connection import Connection, connect
from .keys import DEAD_LETTER_QUEUE, DEFAULT_PREFIX, registry_key
from .ops import QueueOps
from .protocol import Batch, Call, Op, run_sync
from .stats import BUCKETS, WAIT_BUCKETS, wait_field
from .types import JobPriority

log = logging.getLogger("nbqueue.metrics")

#: Longest a scrape waits for one Redis reply (s); then it answers ``nbqueue_up 0``.
SCRAPE_TIMEOUT_S = 3.0

STATES = ("waiting", "active", "delayed", "completed", "failed")
PRIORITIES = tuple(p.name.lower() for p in sorted(JobPriority))  # critical .. background

QUEUE_KEY_SUFFIXES = ("meta", "stats", "ctr")

# name (without _total for counters), type, labels, HELP. The HELP texts say what is
# counted: counters count finishes and attempts, not distinct jobs.
SERIES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("nbqueue_up", "gauge", (), "1 if nbqueue's Redis answered this scrape, else 0"),
    ("opencell_tool_execution", "counter", ("tool_name", "status", "queue"),
     "Job finishes by outcome (the seed's name; tool_name=\"queue_<queue>\"): "
     "status=success counts completions, status=error failures that ended a job. Counts "
     "finishes, not distinct jobs: a job re-run with retry_failed() that fails again "
     "counts twice, while nbqueue_queue_jobs{state=\"failed\"} holds it once"),
    ("opencell_tool_error", "counter", ("tool_name", "error_type", "queue"),
     "Failed attempts by error type (the seed's name): every failed attempt counts, "
     "retried ones too, so the sum over error_type is at least the failures in "
     "opencell_tool_execution_total{status=\"error\"}; a job re-run with retry_failed() "
     "adds its attempts again"),
    ("nbqueue_jobs_finished", "counter", ("queue", "state"),
     "Job finishes by end state (completed, failed): the same totals as "
     "opencell_tool_execution_total and as Queue.get_history(), whose per-minute figures "
     "are increase(nbqueue_jobs_finished_total[1m]). Finishes, not distinct jobs: a job "
     "re-run with retry_failed() and failed again counts twice"),
    ("nbqueue_job_retries", "counter", ("queue",),
     "Failed attempts that were scheduled to run again (attempts left; with backoff or "
     "at once); jobs re-queued by retry_failed() are not counted"),
    ("nbqueue_job_duration_seconds", "histogram", ("queue",),
     "Duration of job attempts (every attempt, failed ones included), as the worker "
     "measured it"),
    ("nbqueue_job_wait_seconds", "histogram", ("queue",),
     "Time from add (or the end of the job's delay) to the start of its first attempt, "
     "by the Redis server's clock; observed when that attempt finishes"),
    ("nbqueue_queue_jobs", "gauge", ("queue", "state"),
     "Jobs in each state now (waiting includes those of a paused queue; completed and "
     "failed count the jobs retained, not all jobs ever finished)"),
    ("nbqueue_queue_waiting_jobs", "gauge", ("queue", "priority"),
     "Waiting jobs per priority level (critical, high, normal, low, background)"),
    ("nbqueue_queue_oldest_waiting_seconds", "gauge", ("queue",),
     "Age of the longest-waiting job: the largest time since add (plus its initial "
     "delay) among the jobs next in line at each priority level; 0 when none waits"),
    ("nbqueue_workers_online", "gauge", ("queue",),
     "Workers of the queue whose heartbeat has not expired (any host, process or mode; "
     "see Queue.get_workers())"),
    ("nbqueue_queue_paused", "gauge", ("queue",), "1 if the queue is paused"),
    ("nbqueue_queue_schedulers", "gauge", ("queue",), "Job schedulers (recurring jobs)"),
)
_HELP = {name: text for name, _, _, text in SERIES}


_Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily


def _family(name: str, kind: str, labels: Sequence[str]) -> Any:
    """An empty family of ``SERIES`` (``Any``: the three classes' add_metric differ)."""
    cls: type[_Family] = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
                          "histogram": HistogramMetricFamily}[kind]
    return cls(name, _HELP[name], labels=list(labels))


def list_queues(prefix: str = DEFAULT_PREFIX) -> Op[list[str]]:
    """The registered queue names, sorted (one SMEMBERS)."""
    return sorted((yield Call.cmd("SMEMBERS", registry_key(prefix))))


def scan_queues(client: Any, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Names of the queues in Redis from a SCAN of the whole keyspace (O(all keys)) for
    ``<prefix>:{<name>}:meta|stats|ctr``. Only to build the registry for data written by
    an older nbqueue. On Redis Cluster redis-py's ``scan_iter`` walks every primary."""
    names: set[str] = set()
    start = len(prefix) + 2
    for key in client.scan_iter(match=f"{prefix}:{{*}}:[cms]*", count=1000):
        key = key.decode() if isinstance(key, bytes) else str(key)
        end = key.find("}", start)
        if end > start and key[end + 2:] in QUEUE_KEY_SUFFIXES:
            names.add(key[start:end])
    return sorted(names)


def discover_queues(client: Any, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Every queue's name: the registry; when it is empty, a SCAN that fills it."""
    names = run_sync(client, list_queues(prefix))
    if not names:
        names = scan_queues(client, prefix)
        if names:
            client.sadd(registry_key(prefix), *names)
    return names


def scrape_queues(client: Any, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The queues a scrape exports: every registered queue, and ``dead_letter`` always
    (zeros until the first job fails), so that a rule on its growth sees it before the
    first record arrives."""
    return sorted({*discover_queues(client, prefix), DEAD_LETTER_QUEUE})


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def read_queues(names: Sequence[str], prefix: str = DEFAULT_PREFIX) -> Op[dict[str, Any]]:
    """Per queue: stats totals, state counts, waiting per priority, the oldest waiting
    job's age (server clock), paused flag and scheduler count. One script call per queue,
    all in one pipeline."""
    calls = [QueueOps(name, prefix=prefix).call("metrics") for name in names]
    replies = (yield Batch(calls)) if calls else []
    out: dict[str, Any] = {}
    for name, r in zip(names, replies, strict=True):
        now = int(r[0])
        flat = r[10]
        since = [int(x) for x in r[9] if int(x) >= 0]
        out[name] = {
            "stats": {flat[i]: _num(flat[i + 1]) for i in range(0, len(flat), 2)},
            "states": {**dict(zip(STATES, (int(x) for x in r[1:6]), strict=True)),
                       "waiting-children": int(r[12])},
            "paused": r[6] == "1", "schedulers": int(r[7]),
            "priorities": dict(zip(PRIORITIES, (int(x) for x in r[8]), strict=True)),
            "oldest_waiting_s": max(0.0, (now - min(since)) / 1000) if since else 0.0,
            "workers": int(r[11])}
    return out


class QueueCollector(Collector):
    """A Prometheus collector of nbqueue queues, read from Redis at each scrape.

    ``connection``: a ``Connection``, URL, ``redis.Redis`` or None (``connect()``).
    ``queues``: names to export; None exports every registered queue and ``dead_letter``.
    ``registry.register(QueueCollector(conn))`` adds it to your own registry;
    :meth:`describe` names every family without touching Redis, so a registry refuses a
    collector whose names clash with series already registered.
    """

    def __init__(self, connection: Any = None, queues: Iterable[str] | None = None, *,
                 prefix: str = DEFAULT_PREFIX) -> None:
        self._connection_arg = connection
        self.queues = None if queues is None else [str(getattr(q, "value", q)) for q in queues]
        self.prefix = prefix

    @property
    def connection(self) -> Connection:
        if not isinstance(self._connection_arg, Connection):
            self._connection_arg = connect(self._connection_arg)
        return self._connection_arg

    def describe(self) -> list[Metric]:
        """The families this collector yields, without samples (no Redis call)."""
        return [_family(name, kind, labels) for name, kind, labels, _ in SERIES]

    def _client(self) -> Any:
        """The scrape's own client: every read bounded by :data:`SCRAPE_TIMEOUT_S`, no
        retries, so a frozen or unreachable Redis gives ``nbqueue_up 0`` promptly instead of
        holding the scrape for the main clients' 30 s timeout and retries."""
        client = getattr(self, "_scrape_client", None)
        if client is None:
            client = self.connection.new_sync(socket_timeout=SCRAPE_TIMEOUT_S)
            self._scrape_client = client
        return client

    def collect(self) -> Iterator[Metric]:
        up = _family("nbqueue_up", "gauge", ())
        try:
            client = self._client()
            names = self.queues if self.queues is not None else scrape_queues(
                client, self.prefix)
            data = run_sync(client, read_queues(names, self.prefix))
        except Exception as exc:  # a scrape must not fail: report the outage as a value
            log.warning("metrics scrape could not read Redis: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families(data)


def _histogram(fam: HistogramMetricFamily, name: str, stats: dict[str, float],
               fields: Sequence[tuple[str, str]], inf: str, total: str) -> None:
    cumulative, buckets = 0.0, []
    for le, field in fields:
        cumulative += stats.get(field, 0.0)
        buckets.append((le, cumulative))
    buckets.append(("+Inf", cumulative + stats.get(inf, 0.0)))
    fam.add_metric([name], buckets, stats.get(total, 0.0))


_DUR_FIELDS = [(str(le), f"dur:{le}") for le in BUCKETS]
_WAIT_FIELDS = [(str(le), wait_field(le)) for le in WAIT_BUCKETS]


def families(data: dict[str, Any]) -> Iterator[Metric]:
    """Metric families (all but ``nbqueue_up``) from :func:`read_queues` output (pure)."""
    fam = {name: _family(name, kind, labels) for name, kind, labels, _ in SERIES
           if name != "nbqueue_up"}
    for name, q in sorted(data.items()):
        tool, stats = f"queue_{name}", q["stats"]
        done, failed = stats.get("completed", 0.0), stats.get("failed", 0.0)
        fam["opencell_tool_execution"].add_metric([tool, "success", name], done)
        fam["opencell_tool_execution"].add_metric([tool, "error", name], failed)
        fam["nbqueue_jobs_finished"].add_metric([name, "completed"], done)
        fam["nbqueue_jobs_finished"].add_metric([name, "failed"], failed)
        for field in sorted(stats):
            if field.startswith("error:"):
                fam["opencell_tool_error"].add_metric([tool, field[6:], name], stats[field])
        fam["nbqueue_job_retries"].add_metric([name], stats.get("retries", 0.0))
        _histogram(fam["nbqueue_job_duration_seconds"], name, stats, _DUR_FIELDS,
                   "dur:inf", "dur_sum")
        _histogram(fam["nbqueue_job_wait_seconds"], name, stats, _WAIT_FIELDS,
                   "wait:inf", "wait_sum")
        for state, n in q["states"].items():
            fam["nbqueue_queue_jobs"].add_metric([name, state], n)
        for prio, n in q["priorities"].items():
            fam["nbqueue_queue_waiting_jobs"].add_metric([name, prio], n)
        fam["nbqueue_queue_oldest_waiting_seconds"].add_metric([name], q["oldest_waiting_s"])
        fam["nbqueue_workers_online"].add_metric([name], q["workers"])
        fam["nbqueue_queue_paused"].add_metric([name], 1 if q["paused"] else 0)
        fam["nbqueue_queue_schedulers"].add_metric([name], q["schedulers"])
    yield from fam.values()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_metrics_server(port: int, host: str = "127.0.0.1",
                        queues: list[str] | None = None, connection: Any = None) -> WSGIServer:
    """An HTTP server (not yet serving) with ``/metrics`` for nbqueue only; port 0 = any
    free port (``server.server_port``). Call ``serve_forever()`` and ``shutdown()``."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(QueueCollector(connection, queues))
    return make_server(host, port, make_wsgi_app(registry), _Server,
                       handler_class=_QuietHandler)


def serve(port: int, host: str = "127.0.0.1", queues: list[str] | None = None,
          connection: Any = None) -> None:
    """Serve ``http://host:port/metrics`` until interrupted (``nbqueue metrics --port``)."""
    server = make_metrics_server(port, host, queues, connection)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = ["SERIES", "QueueCollector", "discover_queues", "families", "list_queues",
           "make_metrics_server", "read_queues", "scan_queues", "serve"]
