"""Signed code jobs: the cell of ``%%enqueue QUEUE --run`` runs on a worker.

A code job is plain JSON::

    {"type": "__code__", "payload": {"code": "...", "queue": "compute", "job_id": "code-1f..",
                                     "ts": 1700000000000, "exp": 1700000120000, "sig": "<hex>"}}

``sig`` is HMAC-SHA256 (key: the shared secret) over the code *and* the queue, the job id,
the signing time and the expiry (``exp``, ms of the Redis server's clock). Only workers
started with ``allow_code=True`` run code jobs, and they check before running anything that
the signature matches, that the job is the one it was signed for (same queue, same job id)
and that it was added (its ``timestamp``, the server's clock at add) before ``exp``.
Anything else fails the job at once (no retry, dead-lettered). So the stored data of a code
job replays nowhere: re-added to the same queue it gets another id, to another queue it names
the wrong queue, and later than ``exp`` (default :data:`DEFAULT_TTL_MS`, or
``$NBQUEUE_CODE_JOB_TTL`` ms) it has expired. (Re-added under its own id while the original
exists, the add returns the original job: nothing runs twice.) Nothing is ever unpickled.

:func:`add_code_job` signs and adds one (what ``%%enqueue --run`` calls).

The secret is ``$NBQUEUE_SECRET`` when set (share it with workers on other machines), else a
random one generated once per process (a kernel): it signs that kernel's jobs and is handed
to the kernel's own workers, including process-mode children (in the pickled processor).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import hmac
import os
import secrets
import threading
from typing import Any

from .errors import CodeSignatureError, UnrecoverableError
from .processor import is_async

__all__ = ["CODE_JOB_TYPE", "DEFAULT_TTL_MS", "CodeSignatureError", "add_code_job",
           "get_secret", "make_code_job", "run_code", "sign", "verify", "wrap_processor"]

CODE_JOB_TYPE = "__code__"
ENV_SECRET = "NBQUEUE_SECRET"
ENV_TTL = "NBQUEUE_CODE_JOB_TTL"
#: How long after signing a code job may be added (ms): it is added right away, so short.
DEFAULT_TTL_MS = 120_000

_generated: bytes | None = None
_lock = threading.Lock()


def get_secret() -> bytes:
    """``$NBQUEUE_SECRET``, else this process's generated secret (created on first use)."""
    global _generated
    env = os.environ.get(ENV_SECRET)
    if env:
        return env.encode()
    with _lock:
        if _generated is None:
            _generated = secrets.token_hex(32).encode()
        return _generated


def _key(secret: str | bytes | None) -> bytes:
    if secret is None:
        return get_secret()
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def sign(code: str, ts: int, secret: str | bytes | None = None, *, queue: str = "",
         job_id: str = "", exp: int = 0) -> str:
    """Hex HMAC-SHA256 over the queue, job id, signing time, expiry and code."""
    msg = f"nbqueue-code-2\n{queue}\n{job_id}\n{int(ts)}\n{int(exp)}\n{code}".encode()
    return hmac.new(_key(secret), msg, hashlib.sha256).hexdigest()


def default_ttl_ms() -> int:
    """``$NBQUEUE_CODE_JOB_TTL`` (ms) if set to a positive integer, else :data:`DEFAULT_TTL_MS`."""
    raw = os.environ.get(ENV_TTL, "").strip()
    if not raw:
        return DEFAULT_TTL_MS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${ENV_TTL} must be a positive number of ms, not {raw!r}")
    return value


def make_code_job(code: str, secret: str | bytes | None = None, *, queue: str, job_id: str,
                  now: int, ttl: int | None = None) -> dict[str, Any]:
    """The job data of a code job signed for ``queue`` and ``job_id`` (JSON only).

    ``now``: the signing time in ms of the Redis server's clock (see :func:`add_code_job`);
    the job must be added before ``now + ttl`` (default :func:`default_ttl_ms`).
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, not {type(code).__name__}")
    if not isinstance(queue, str) or not queue or not isinstance(job_id, str) or not job_id:
        raise ValueError("a code job is signed for one queue and one job id (non-empty str)")
    ttl = default_ttl_ms() if ttl is None else int(ttl)
    if ttl < 1:
        raise ValueError(f"ttl must be a positive number of ms: {ttl!r}")
    ts = int(now)
    exp = ts + ttl
    return {"type": CODE_JOB_TYPE,
            "payload": {"code": code, "queue": queue, "job_id": job_id, "ts": ts, "exp": exp,
                        "sig": sign(code, ts, secret, queue=queue, job_id=job_id, exp=exp)}}


def add_code_job(queue: Any, code: str, *, secret: str | bytes | None = None,
                 ttl: int | None = None, **job_options: Any) -> Any:
    """Sign ``code`` for a fresh job id of ``queue`` (a sync ``Queue``) and add it.

    The signing time is read from the Redis server's clock, like every time nbqueue stores.
    """
    if job_options.get("job_id") is not None:
        raise ValueError("a code job's id is chosen when it is signed; job_id cannot be given")
    job_options.pop("job_id", None)
    now = queue._run(queue.ops.server_time())
    job_id = f"code-{secrets.token_hex(8)}"
    data = make_code_job(code, secret, queue=queue.name, job_id=job_id, now=now, ttl=ttl)
    return queue.add(data, job_id=job_id, **job_options)


def is_code_job(data: Any) -> bool:
    return isinstance(data, dict) and data.get("type") == CODE_JOB_TYPE


def verify(data: Any, secret: str | bytes | None = None, *, queue: str | None = None,
           job_id: str | None = None, added_at: int | None = None) -> str:
    """The code of a correctly signed code job; else :class:`CodeSignatureError`.

    With ``queue``, ``job_id`` and ``added_at`` (the job's timestamp: the server's clock
    when it was added), also that the job is the one it was signed for and was added before
    it expired (a worker always passes them).
    """
    payload = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(payload, dict):
        raise CodeSignatureError("code job has no payload; refused")
    code, ts, sig = payload.get("code"), payload.get("ts"), payload.get("sig")
    bound_q, bound_id, exp = payload.get("queue"), payload.get("job_id"), payload.get("exp")
    if not isinstance(sig, str) or not sig:
        raise CodeSignatureError("code job is not signed; refused (nothing was run)")
    if not isinstance(code, str) or isinstance(ts, bool) or not isinstance(ts, int):
        raise CodeSignatureError("code job is malformed; refused (nothing was run)")
    if not isinstance(bound_q, str) or not isinstance(bound_id, str) \
            or isinstance(exp, bool) or not isinstance(exp, int):
        raise CodeSignatureError(
            "code job is not bound to a queue, a job id and an expiry (signed by an older "
            "nbqueue?); refused (nothing was run)")
    expected = sign(code, ts, secret, queue=bound_q, job_id=bound_id, exp=exp)
    if not hmac.compare_digest(expected, sig):
        raise CodeSignatureError(
            "code job signature does not match (tampered, or signed with another secret); "
            "refused (nothing was run). Workers on other machines need the same "
            f"${ENV_SECRET}")
    if queue is not None and bound_q != queue:
        raise CodeSignatureError(
            f"code job was signed for queue {bound_q!r}, not {queue!r} (replayed?); refused "
            "(nothing was run)")
    if job_id is not None and bound_id != job_id:
        raise CodeSignatureError(
            f"code job was signed for job {bound_id!r}, not {job_id!r} (replayed?); refused "
            "(nothing was run)")
    if added_at is not None and added_at > exp:
        raise CodeSignatureError(
            f"code job expired: added {added_at - exp} ms after its expiry (signed at {ts}, "
            f"valid until {exp}, server clock; replayed?); refused (nothing was run)")
    return code


def run_code(code: str, job: Any = None) -> Any:
    """Run ``code`` in a fresh namespace (``job`` bound); the last expression's value."""
    tree = ast.parse(code, filename="<nbqueue code job>", mode="exec")
    last: ast.expr | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body.pop().value  # type: ignore[attr-defined]
    ns: dict[str, Any] = {"__name__": "__nbqueue_code__", "job": job}
    exec(compile(tree, "<nbqueue code job>", "exec"), ns)
    if last is None:
        return None
    expr = ast.Expression(last)
    return eval(compile(expr, "<nbqueue code job>", "eval"), ns)


def _verified(job: Any, secret: bytes) -> str:
    """The code of ``job`` once its signature, binding and expiry are checked."""
    return verify(job.data, secret, queue=job.queue_name, job_id=job.id,
                  added_at=job.timestamp)


class CodeJobProcessor:
    """Runs signed code jobs and hands every other job to ``processor``.

    A class (not a closure) so process-mode workers pickle it compactly; the secret travels
    with it to the children, never through Redis.
    """

    def __init__(self, processor: Any, secret: bytes) -> None:
        self.processor = processor
        self.secret = secret

    def _code(self, job: Any) -> Any:
        return run_code(_verified(job, self.secret), job)

    def _other(self, job: Any) -> Any:
        if self.processor is None:
            raise UnrecoverableError(
                f"this worker only runs code jobs ({CODE_JOB_TYPE!r}); job type "
                f"{job.name!r} has no processor (register one, or start the worker with "
                "processor=...)")
        return self.processor(job)

    def __call__(self, job: Any) -> Any:
        if is_code_job(job.data):
            return self._code(job)
        return self._other(job)

    def __repr__(self) -> str:
        return f"<CodeJobProcessor wrapping {self.processor!r}>"


class AsyncCodeJobProcessor(CodeJobProcessor):
    """The same for an async ``processor``: code jobs run on a thread, off the loop."""

    async def __call__(self, job: Any) -> Any:
        if is_code_job(job.data):
            code = _verified(job, self.secret)  # checked before anything is scheduled
            return await asyncio.to_thread(run_code, code, job)
        return await self._other(job)

    async def _other(self, job: Any) -> Any:
        return await super()._other(job)


def wrap_processor(processor: Any, secret: str | bytes | None = None) -> CodeJobProcessor:
    """A processor that runs signed code jobs and passes other jobs to ``processor``.

    ``processor`` may be None (a code-only worker: other jobs fail, unrecoverably).
    ``secret`` defaults to :func:`get_secret`, resolved now, in the calling process.
    """
    if processor is not None and not callable(processor):
        raise TypeError(f"processor must be callable or None, not {type(processor).__name__}")
    if isinstance(processor, CodeJobProcessor):
        processor = processor.processor
    key = _key(secret)
    with _lock:  # the same wrapper for the same processor: re-run cells reuse the worker
        cached = _wrappers.get((id(processor), key))
        if cached is not None and cached.processor is processor:
            return cached
        cls = AsyncCodeJobProcessor if processor is not None and is_async(processor) \
            else CodeJobProcessor
        wrapper = cls(processor, key)
        _wrappers[(id(processor), key)] = wrapper
        return wrapper


_wrappers: dict[tuple[int, bytes], CodeJobProcessor] = {}
