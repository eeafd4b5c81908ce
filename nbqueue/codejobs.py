"""Signed code jobs: the cell of ``%%enqueue QUEUE --run`` runs on a worker.

A code job is plain JSON::

    {"type": "__code__", "payload": {"code": "...", "ts": 1700000000000, "sig": "<hex>"}}

``sig`` is HMAC-SHA256 (key: the shared secret) over ``"<ts>\\n<code>"``. Only workers
started with ``allow_code=True`` run code jobs, and they verify the signature before running
anything; a missing or wrong signature fails the job at once (no retry, dead-lettered).
Nothing is ever unpickled from Redis.

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
import time
from typing import Any

from .errors import SignatureError, UnrecoverableError
from .processor import is_async

__all__ = ["CODE_JOB_TYPE", "CodeSignatureError", "get_secret", "make_code_job",
           "run_code", "sign", "verify", "wrap_processor"]

CODE_JOB_TYPE = "__code__"
ENV_SECRET = "NBQUEUE_SECRET"

_generated: bytes | None = None
_lock = threading.Lock()


class CodeSignatureError(SignatureError, UnrecoverableError):
    """A code job whose signature is missing or wrong: failed at once, never run."""


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


def sign(code: str, ts: int, secret: str | bytes | None = None) -> str:
    """Hex HMAC-SHA256 of ``"<ts>\\n<code>"``."""
    msg = f"{int(ts)}\n{code}".encode()
    return hmac.new(_key(secret), msg, hashlib.sha256).hexdigest()


def make_code_job(code: str, secret: str | bytes | None = None) -> dict[str, Any]:
    """The job data of a signed code job (JSON only)."""
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, not {type(code).__name__}")
    ts = int(time.time() * 1000)
    return {"type": CODE_JOB_TYPE,
            "payload": {"code": code, "ts": ts, "sig": sign(code, ts, secret)}}


def is_code_job(data: Any) -> bool:
    return isinstance(data, dict) and data.get("type") == CODE_JOB_TYPE


def verify(data: Any, secret: str | bytes | None = None) -> str:
    """The code of a correctly signed code job; else :class:`CodeSignatureError`."""
    payload = data.get("payload") if isinstance(data, dict) else None
    if not isinstance(payload, dict):
        raise CodeSignatureError("code job has no payload; refused")
    code, ts, sig = payload.get("code"), payload.get("ts"), payload.get("sig")
    if not isinstance(sig, str) or not sig:
        raise CodeSignatureError("code job is not signed; refused (nothing was run)")
    if not isinstance(code, str) or isinstance(ts, bool) or not isinstance(ts, int):
        raise CodeSignatureError("code job is malformed; refused (nothing was run)")
    if not hmac.compare_digest(sign(code, ts, secret), sig):
        raise CodeSignatureError(
            "code job signature does not match (tampered, or signed with another secret); "
            "refused (nothing was run). Workers on other machines need the same "
            f"${ENV_SECRET}")
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


class CodeJobProcessor:
    """Runs signed code jobs and hands every other job to ``processor``.

    A class (not a closure) so process-mode workers pickle it compactly; the secret travels
    with it to the children, never through Redis.
    """

    def __init__(self, processor: Any, secret: bytes) -> None:
        self.processor = processor
        self.secret = secret

    def _code(self, job: Any) -> Any:
        code = verify(job.data, self.secret)
        return run_code(code, job)

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
            code = verify(job.data, self.secret)  # checked before anything is scheduled
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
