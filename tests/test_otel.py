"""OpenTelemetry (nbqueue.otel) with the SDK's InMemorySpanExporter: send spans around adds,
the trace context carried in the job to every attempt in thread, asyncio and process mode,
wait spans, fan-in links, and no cost (no import) without opentelemetry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import nbqueue.aio as aio
from nbqueue import Queue, Worker, otel
from nbqueue.connection import Connection

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The global tracer provider (set once per process) exporting to memory."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _by_name(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def work(job: Any) -> Any:
    with trace.get_tracer("test").start_as_current_span("inside the body"):
        if job.data.get("payload") == "fail" and job.attempts_made == 0:
            raise ValueError("first attempt fails")
        return job.data.get("payload")


async def awork(job: Any) -> Any:
    return work(job)


def test_enabled_with_the_api_installed() -> None:
    assert otel.ENABLED


@pytest.mark.parametrize("mode", ["thread", "asyncio", "process"])
def test_the_trace_reaches_every_attempt_in_every_mode(
        spans: InMemorySpanExporter, conn: Connection, mode: str) -> None:
    q = Queue(f"otel_{mode}", conn, default_job_options={
        "attempts": 2, "backoff": {"type": "fixed", "delay": 10}})
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("notebook cell") as cell:
        job = q.add({"type": "t", "payload": "fail"})  # fails once, then succeeds
    processor = awork if mode == "asyncio" else work
    with Worker(q.name, processor, conn, mode=mode, concurrency=1):
        assert job.result(timeout=30) == "fail"
    (send,) = _by_name(spans, f"send {q.name}")
    assert send.kind is SpanKind.PRODUCER and send.parent.span_id == \
        cell.get_span_context().span_id
    assert send.attributes["messaging.system"] == "nbqueue"
    assert send.attributes["messaging.destination.name"] == q.name
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.message.id"] == job.id
    attempts = sorted(_by_name(spans, f"process {q.name}"),
                      key=lambda s: s.attributes["nbqueue.attempt"])
    assert [s.attributes["nbqueue.attempt"] for s in attempts] == [1, 2]
    for s in attempts:  # children of the add's span, in the same trace
        assert s.kind is SpanKind.CONSUMER
        assert s.context.trace_id == send.context.trace_id
        assert s.parent.span_id == send.context.span_id
        assert s.attributes["messaging.message.id"] == job.id
        assert s.attributes["messaging.operation.type"] == "process"
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[0].attributes["error.type"] == "ValueError"
    assert attempts[1].status.status_code is not StatusCode.ERROR
    (wait,) = _by_name(spans, f"wait {q.name}")
    assert wait.kind is SpanKind.CLIENT and wait.attributes["messaging.message.id"] == job.id
    if mode != "process":  # the body's own spans nest in its attempt's span
        inner = _by_name(spans, "inside the body")
        assert sorted(s.parent.span_id for s in inner) == \
            sorted(s.context.span_id for s in attempts)


def test_bulk_add_and_batch_wait_spans(spans: InMemorySpanExporter, conn: Connection) -> None:
    q = Queue("otel_bulk", conn)
    batch = q.add_bulk([{"type": "t", "payload": i} for i in range(3)])
    with Worker(q.name, work, conn, concurrency=3):
        assert batch.results(timeout=30) == [0, 1, 2]
    (send,) = _by_name(spans, "send otel_bulk")
    assert send.attributes["messaging.batch.message_count"] == 3
    attempts = _by_name(spans, "process otel_bulk")
    assert len(attempts) == 3 and {s.parent.span_id for s in attempts} == \
        {send.context.span_id}
    (wait,) = _by_name(spans, "wait otel_bulk")
    assert wait.attributes["messaging.batch.message_count"] == 3


def test_asyncio_producer_and_waiter(spans: InMemorySpanExporter, conn: Connection,
                                     redis_url: str) -> None:
    async def main() -> Any:
        q = aio.Queue("otel_aio", redis_url)
        job = await q.add({"type": "t", "payload": "x"})
        w = aio.Worker("otel_aio", awork, redis_url, mode="asyncio")
        await w.start()
        try:
            return await job.result(timeout=30)
        finally:
            await w.stop()

    assert asyncio.run(main()) == "x"
    (send,) = _by_name(spans, "send otel_aio")
    (attempt,) = _by_name(spans, "process otel_aio")
    assert attempt.parent.span_id == send.context.span_id
    assert _by_name(spans, "wait otel_aio")


def test_a_fan_in_links_its_dependencies(spans: InMemorySpanExporter,
                                         conn: Connection) -> None:
    q = Queue("otel_fan", conn)
    parts = [q.add({"type": "part", "payload": i}) for i in range(3)]
    total = q.add({"type": "sum"}, depends_on=parts)
    with Worker(q.name, lambda job: sum(job.dependency_results().values())
                if job.name == "sum" else job.data["payload"], conn, concurrency=2):
        assert total.result(timeout=30) == 3
    sends = {s.attributes["messaging.message.id"]: s for s in _by_name(spans, "send otel_fan")}
    (fan,) = [s for s in _by_name(spans, "process otel_fan")
              if s.attributes["messaging.message.id"] == total.id]
    assert fan.parent.span_id == sends[total.id].context.span_id
    linked = {link.context.span_id for link in fan.links}
    assert linked == {sends[p.id].context.span_id for p in parts}


def test_nothing_is_imported_without_opentelemetry(redis_url: str) -> None:
    """With opentelemetry not importable nbqueue works and never tries it again."""
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # not installed\n"
        "import nbqueue, nbqueue.otel as o\n"
        "from nbqueue import Queue, Worker, connect\n"
        "assert not o.ENABLED\n"
        "q = Queue('otel_none', connect())\n"
        "j = q.add({'type': 't', 'payload': 5})\n"
        "with Worker('otel_none', lambda job: job.data['payload'], connect()):\n"
        "    assert j.result(timeout=30) == 5\n"
        "assert sys.modules['opentelemetry'] is None\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.')]\n"
        "print('ok')\n")
    env = dict(os.environ, NBQUEUE_REDIS_URL=redis_url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_no_spans_per_job_without_a_tracer_provider(redis_url: str) -> None:
    """With the API installed but no SDK provider set, a job carrying no trace context gets
    no attempt span (the worker's per-job path stays free) and an add makes no send span;
    a remote context the caller attached still reaches the job; a provider set later is
    used at once."""
    code = (
        "from opentelemetry import trace, context, propagate\n"
        "import nbqueue.otel as o\n"
        "from nbqueue import Queue, Worker, connect\n"
        "from nbqueue.worker import execution\n"
        "assert o.ENABLED and not o.recording()\n"
        "made = []\n"
        "real = o.attempt_span\n"
        "def spy(*a):\n"
        "    made.append(real(*a)); return made[-1]\n"
        "o.attempt_span = spy\n"
        "q = Queue('otel_nosdk', connect())\n"
        "j = q.add({'payload': 5})\n"
        "assert j._record.opts.trace is None\n"
        "with Worker(q.name, lambda job: job.data['payload'], connect()) as w:\n"
        "    assert j.result(timeout=30) == 5\n"
        "    assert w.engine.jobs.spans == {}\n"
        "assert made == [None]\n"
        "tp = '00-' + 'ab' * 16 + '-' + 'cd' * 8 + '-01'\n"
        "token = context.attach(propagate.extract({'traceparent': tp}))\n"
        "try:\n"
        "    k = q.add({'payload': 6})\n"
        "finally:\n"
        "    context.detach(token)\n"
        "assert q.get_job(k.id)._record.opts.trace['traceparent'] == tp\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "assert o.recording()\n"
        "m = q.add({'payload': 7})\n"
        "assert q.get_job(m.id)._record.opts.trace['traceparent']\n"
        "print('ok')\n")
    env = dict(os.environ, NBQUEUE_REDIS_URL=redis_url)
    env.pop("OTEL_PYTHON_TRACER_PROVIDER", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
