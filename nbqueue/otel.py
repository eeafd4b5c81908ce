"""OpenTelemetry tracing (the ``otel`` extra: ``pip install 'nbqueue[otel]'``).

When ``opentelemetry-api`` is importable (checked once, here, at import), nbqueue makes
spans with the tracer ``nbqueue`` of the global tracer provider, following OpenTelemetry's
messaging semantic conventions (``messaging.system = "nbqueue"``,
``messaging.destination.name`` = the queue, ``messaging.operation.type`` /
``messaging.operation.name``, ``messaging.message.id`` = the job id):

- ``send <queue>`` (PRODUCER) around every add (``add``, ``add_bulk``, ``map``: one span
  per call, ``messaging.batch.message_count`` for more than one job). Its context travels
  *in the job* (W3C ``traceparent``, in the job's stored options), so it reaches every
  attempt, in every worker mode, on any machine, and survives retries.
- ``process <queue>`` (CONSUMER) around each attempt, a child of the job's ``send`` span,
  made by the worker engine (in process mode: in the parent, around the child's run), with
  ``nbqueue.attempt``; a failed attempt records its error. A job added with
  ``depends_on`` carries its dependencies' contexts, and its attempt spans *link* to them
  (a fan-in has several parents; links are how OpenTelemetry says so).
- ``wait <queue>`` (CLIENT) around ``job.result()`` and a batch's ``wait()`` /
  ``results()`` (``messaging.batch.message_count``).

Without ``opentelemetry-api`` nothing here runs: every call site tests :data:`ENABLED`
first, a module constant. ``NBQUEUE_OTEL=0`` turns tracing off with the API installed.
Without an SDK configured the API's tracer is a no-op and so are the spans.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

from .protocol import Op

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

try:  # the one import guard: absent, ENABLED is False and nothing else is touched
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised by tests/test_otel.py in a subprocess
    _trace = None  # type: ignore[assignment]
    _propagate = None  # type: ignore[assignment]
    _context = None  # type: ignore[assignment]

#: the API's providers that record nothing (see :func:`recording`)
_NO_SDK: tuple[type, ...] = () if _trace is None else (
    _trace.ProxyTracerProvider, _trace.NoOpTracerProvider)

#: a tracer provider named by the environment (loaded by the API on first use)
_PROVIDER_FROM_ENV: bool = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ

#: whether nbqueue makes spans (opentelemetry-api importable, NBQUEUE_OTEL not "0")
ENABLED: bool = _trace is not None and os.environ.get("NBQUEUE_OTEL", "1").strip().lower() \
    not in ("0", "false", "no", "off")

SYSTEM = "nbqueue"
__all__ = ["ENABLED", "attempt_span", "carrier", "end_attempt", "send", "traced", "waiting"]

#: the trace context the jobs prepared now carry (set by :func:`send` while its add runs;
#: a context variable, so concurrent adds on other threads or tasks keep their own)
_CARRIER: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "nbqueue_otel_carrier", default=None)


def traced(options: Any) -> Any:
    """``options`` with the trace context of the add under way (as is when none): what
    ``QueueOps.prepare`` stores with each job. One copy per options object and add."""
    tc = _CARRIER.get()
    if tc is None:
        return options
    copies = tc.setdefault("_copies", {})
    found = copies.get(id(options))
    if found is None:
        from dataclasses import replace

        found = copies[id(options)] = (options, replace(options, trace={
            k: v for k, v in tc.items() if k != "_copies"}))
    return found[1]


def tracing_add() -> bool:
    """Whether an add is under way in a ``send`` span (on this thread / task)."""
    return _CARRIER.get() is not None


def add_links(carriers: Sequence[Any]) -> None:
    """Record the trace contexts of the jobs the job being added depends on (a fan-in):
    its attempt spans link to them."""
    tc = _CARRIER.get()
    if tc is not None:
        tc["links"] = [dict(c) for c in carriers if isinstance(c, Mapping) and c]


def _tracer() -> Any:
    return _trace.get_tracer("nbqueue")


def recording() -> bool:
    """Whether a tracer provider is configured (an SDK's, set in code or by
    ``OTEL_PYTHON_TRACER_PROVIDER``). The API's default proxy provider (before one is set)
    and its no-op provider make non-recording spans only: nbqueue then skips its spans
    where that changes nothing (no trace context to pass on), so tracing costs ~nothing
    per job without an SDK. Checked per call: a provider set later is used at once."""
    # The API's global, when this version has it (else the public call decides): None = no
    # provider set in code; get_tracer_provider() would then look at os.environ (a KeyError
    # raised and caught per call when the variable is unset), read once at import here.
    if getattr(_trace, "_TRACER_PROVIDER", _trace) is None and not _PROVIDER_FROM_ENV:
        return False
    return not isinstance(_trace.get_tracer_provider(), _NO_SDK)


def _passing_on() -> bool:
    """Whether the current context holds a valid span context (e.g. a remote one a user
    attached): even a non-recording ``send`` span passes it on to the jobs."""
    return _trace.get_current_span().get_span_context().is_valid


def _attrs(queue: str, operation: str, kind: str, ids: Sequence[str] = ()) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": SYSTEM, "messaging.destination.name": queue,
        "messaging.operation.type": kind, "messaging.operation.name": operation}
    if len(ids) == 1:
        attrs["messaging.message.id"] = ids[0]
    elif len(ids) > 1:
        attrs["messaging.batch.message_count"] = len(ids)
    return attrs


def carrier(span: Any) -> dict[str, str]:
    """The W3C trace context of ``span`` as a small dict (what a job carries)."""
    out: dict[str, str] = {}
    _propagate.inject(out, context=_trace.set_span_in_context(span))
    return out


def _context_of(found: Any) -> Any:
    """The span context a stored carrier names (None: nothing usable)."""
    if not isinstance(found, Mapping) or not found:
        return None
    ctx = _trace.get_current_span(_propagate.extract(dict(found))).get_span_context()
    return ctx if ctx.is_valid else None


def _fail(span: Any, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(_trace.Status(_trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def send(queue: str, op: Op[T]) -> Op[T]:
    """Run the add ``op`` inside a ``send <queue>`` span; the span's context goes into
    every job the op prepares (:func:`traced`)."""
    span = _tracer().start_span(f"send {queue}", kind=_trace.SpanKind.PRODUCER,
                                attributes=_attrs(queue, "send", "send"))
    tc = carrier(span)  # {} without an SDK (a no-op span): then the jobs carry nothing
    token = _CARRIER.set(tc if tc else None)
    try:
        result = yield from op
    except BaseException as exc:
        _fail(span, exc)
        span.end()
        raise
    finally:
        with contextlib.suppress(ValueError):  # closed from another context: nothing to do
            _CARRIER.reset(token)
    found: Any = result
    ids = [found.id] if hasattr(found, "id") else [getattr(j, "id", "") for j in found]
    if len(ids) == 1:
        span.set_attribute("messaging.message.id", ids[0])
    else:
        span.set_attribute("messaging.batch.message_count", len(ids))
    span.end()
    return result


def sending(method: F) -> F:
    """Decorate a queue's add op method (``self.name`` is the queue): with tracing on, the
    op runs inside :func:`send`; off, the method is called as it is. (Its type is kept.)"""
    import functools

    @functools.wraps(method)
    def wrapper(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        op = method(self, *args, **kwargs)
        if ENABLED and (recording() or _passing_on()):
            return send(self.name, op)
        return op  # (without an SDK the span and its empty carrier would do nothing)

    return cast(F, wrapper)


def waiting(queue: str, ids: Sequence[str], op: Op[T]) -> Op[T]:
    """Run ``op`` (a wait for results) inside a ``wait <queue>`` span."""
    if not recording():  # a non-recording span that nothing reads: skipped
        return (yield from op)
    span = _tracer().start_span(f"wait {queue}", kind=_trace.SpanKind.CLIENT,
                                attributes=_attrs(queue, "wait", "receive", ids))
    try:
        result = yield from op
    except BaseException as exc:
        _fail(span, exc)
        span.end()
        raise
    span.end()
    return result


def attempt_span(queue: str, job_id: str, attempt: int, trace: Any) -> Any:
    """Start the ``process <queue>`` span of one attempt (ended by :func:`end_attempt`):
    a child of the job's ``send`` span, linked to its dependencies' spans. None (no span)
    for a job carrying no trace context while no tracer provider is set: that span would
    record nothing and make nothing current (the worker's per-job path, kept ~free)."""
    if not trace and not recording():
        return None
    parent = None
    links = []
    if isinstance(trace, Mapping):
        ctx = _context_of({k: v for k, v in trace.items() if k != "links"})
        if ctx is not None:
            parent = _trace.set_span_in_context(_trace.NonRecordingSpan(ctx))
        for found in trace.get("links") or ():
            linked = _context_of(found)
            if linked is not None:
                links.append(_trace.Link(linked))
    attrs = _attrs(queue, "process", "process", [job_id])
    attrs["nbqueue.attempt"] = attempt
    return _tracer().start_span(f"process {queue}", context=parent, links=links,
                                kind=_trace.SpanKind.CONSUMER, attributes=attrs)


def end_attempt(span: Any, error: BaseException | str | None = None,
                error_type: str | None = None) -> None:
    """End an attempt span; ``error`` (an exception or a reason) marks it failed."""
    if error is not None:
        if isinstance(error, BaseException):
            span.record_exception(error)
        if error_type:
            span.set_attribute("error.type", error_type)
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(error)))
    span.end()


@contextlib.contextmanager
def current(span: Any) -> Iterator[None]:
    """Make ``span`` the current span (code run inside the attempt nests under it); None:
    nothing to do (tracing off)."""
    if span is None:
        yield
        return
    token = _context.attach(_trace.set_span_in_context(span))
    try:
        yield
    finally:
        _context.detach(token)
