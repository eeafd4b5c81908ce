"""Prometheus metrics, read from Redis at scrape time.

Workers (thread, asyncio, subprocess, other machines) add their totals to each queue's
Redis ``stats`` hash in the same script that finishes the jobs, so Redis is the one source
of truth and a scrape of any process sees everything. :class:`QueueCollector` turns those
totals and the live queue depths into Prometheus series; register it in your own registry,
or run :func:`serve` (``nbqueue metrics --port 9108``).

Series (``<q>`` is the queue name):

- ``opencell_tool_execution_total{tool_name="queue_<q>", status="success"|"error"}``: jobs
  that ended completed / failed (the seed's names).
- ``opencell_tool_error_total{tool_name="queue_<q>", error_type=...}``: failed attempts by
  type: ``timeout``, ``unrecoverable``, ``stalled``, ``returned_failure``, or the
  exception's class name (retried attempts count too).
- ``nbqueue_job_duration_seconds{queue}``: histogram of attempt durations.
- ``nbqueue_queue_jobs{queue, state}``: jobs now waiting, active, delayed, completed,
  failed (the last two as retained); ``nbqueue_queue_paused{queue}``;
  ``nbqueue_queue_schedulers{queue}``; ``nbqueue_up`` (0 when Redis did not answer).
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
from .keys import DEFAULT_PREFIX, QueueKeys
from .protocol import Batch, Call, Op, run_sync
from .stats import BUCKETS

log = logging.getLogger("nbqueue.metrics")

STATES = ("waiting", "active", "delayed", "completed", "failed")


QUEUE_KEY_SUFFIXES = ("meta", "stats", "ctr")


def discover_queues(client: Any, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Names of the queues in Redis, from one SCAN for ``<prefix>:{<name>}:meta|stats|ctr``
    (a queue has one of them once it has had a job, a setting or a finished job). On Redis
    Cluster redis-py's ``scan_iter`` walks every primary."""
    names: set[str] = set()
    start = len(prefix) + 2
    for key in client.scan_iter(match=f"{prefix}:{{*}}:[cms]*", count=1000):
        key = key.decode() if isinstance(key, bytes) else str(key)
        end = key.find("}", start)
        if end > start and key[end + 2:] in QUEUE_KEY_SUFFIXES:
            names.add(key[start:end])
    return sorted(names)


def read_queues(names: Sequence[str], prefix: str = DEFAULT_PREFIX) -> Op[dict[str, Any]]:
    """Per queue: its ``stats`` totals, state counts, paused flag and scheduler count."""
    calls: list[Call] = []
    for name in names:
        k = QueueKeys(name, prefix)
        calls += [Call.cmd("HGETALL", k.stats), Call.cmd("ZCARD", k.wait),
                  Call.cmd("ZCARD", k.active), Call.cmd("ZCARD", k.delayed),
                  Call.cmd("ZCARD", k.completed), Call.cmd("ZCARD", k.failed),
                  Call.cmd("HGET", k.meta, "paused"), Call.cmd("ZCARD", k.base + "schedulers")]
    replies = (yield Batch(calls)) if calls else []
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        r = replies[8 * i:8 * i + 8]
        out[name] = {"stats": {f: float(v) for f, v in (r[0] or {}).items()},
                     "states": dict(zip(STATES, (int(x) for x in r[1:6]), strict=True)),
                     "paused": r[6] == "1", "schedulers": int(r[7])}
    return out


class QueueCollector(Collector):
    """A Prometheus collector of nbqueue queues, read from Redis at each scrape.

    ``connection``: a ``Connection``, URL, ``redis.Redis`` or None (``connect()``).
    ``queues``: names to export; None discovers every queue with SCAN at each scrape.
    ``registry.register(QueueCollector(conn))`` adds it to your own registry.
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
        return []  # registering must not touch Redis; series are known at scrape time

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("nbqueue_up", "1 if nbqueue's Redis answered this scrape")
        try:
            client = self.connection.sync()
            names = self.queues if self.queues is not None else discover_queues(
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


def families(data: dict[str, Any]) -> Iterator[Metric]:
    """Metric families from :func:`read_queues` output (pure)."""
    execs = CounterMetricFamily("opencell_tool_execution",
                                "Jobs that finished, by queue and outcome",
                                labels=["tool_name", "status"])
    errors = CounterMetricFamily("opencell_tool_error", "Failed job attempts by error type",
                                 labels=["tool_name", "error_type"])
    hist = HistogramMetricFamily("nbqueue_job_duration_seconds",
                                 "Duration of job attempts", labels=["queue"])
    depth = GaugeMetricFamily("nbqueue_queue_jobs", "Jobs in each state now",
                              labels=["queue", "state"])
    paused = GaugeMetricFamily("nbqueue_queue_paused", "1 if the queue is paused",
                               labels=["queue"])
    scheds = GaugeMetricFamily("nbqueue_queue_schedulers", "Job schedulers (recurring jobs)",
                               labels=["queue"])
    for name, q in sorted(data.items()):
        tool, stats = f"queue_{name}", q["stats"]
        execs.add_metric([tool, "success"], stats.get("completed", 0.0))
        execs.add_metric([tool, "error"], stats.get("failed", 0.0))
        for field in sorted(stats):
            if field.startswith("error:"):
                errors.add_metric([tool, field[len("error:"):]], stats[field])
        cumulative, buckets = 0.0, []
        for le in BUCKETS:
            cumulative += stats.get(f"dur:{le}", 0.0)
            buckets.append((str(le), cumulative))
        buckets.append(("+Inf", cumulative + stats.get("dur:inf", 0.0)))
        hist.add_metric([name], buckets, stats.get("dur_sum", 0.0))
        for state, n in q["states"].items():
            depth.add_metric([name, state], n)
        paused.add_metric([name], 1 if q["paused"] else 0)
        scheds.add_metric([name], q["schedulers"])
    yield from (execs, errors, hist, depth, paused, scheds)


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


__all__ = ["QueueCollector", "discover_queues", "families", "make_metrics_server",
           "read_queues", "serve"]
