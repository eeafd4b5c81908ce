"""Sans-I/O operations and their two executors (redis-py sync and asyncio).

Every queue operation is written once, as a generator that *yields* what it needs
from Redis (a :class:`Call`, or a :class:`Batch` of calls sent in one round trip) and
receives the reply. :func:`run_sync` and :func:`run_async`
drive such a generator; nothing else in nbqueue talks to Redis. :func:`together` runs the
ops of several queues in lockstep, one round trip per round. The operations themselves
are ``nbqueue.ops``; architecture: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sys
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster
import redis.cluster
from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError, OutOfMemoryError

from . import direct, scripts
from .connection import describe_client
from .errors import RedisBusyError, RedisOutOfMemoryError, RedisUnavailableError

T = TypeVar("T")


@dataclass(frozen=True)
class Call:
    """One Redis call: a Lua script by name (``script``) or a raw command (``command``)."""

    script: str | None = None
    keys: Sequence[str] = ()
    args: Sequence[Any] = ()
    command: tuple[Any, ...] | None = None
    # optional: an error reply (e.g. NOPERM for an ACL user) is handed to the op as the
    # reply (a ``redis.ResponseError``) instead of raised: for bookkeeping an op can do without
    optional: bool = False
    # raw: the reply's bytes as they are (binary values: Arrow artifacts), not decoded text
    raw: bool = False
    # reply_timeout: seconds within which the reply must arrive (asyncio executor), else
    # the connection is presumed dead -- half-open, e.g. dropped by a NAT without FIN/RST --
    # and is closed: the step raises RedisUnavailableError saying so, and is NOT re-sent
    # (a re-sent fetch would lock jobs twice). None: the client's socket timeout (30 s).
    reply_timeout: float | None = None

    @staticmethod
    def cmd(*command: Any) -> Call:
        return Call(command=command)

    @staticmethod
    def raw_cmd(*command: Any) -> Call:
        """A command whose reply comes back as bytes (``None`` for a missing value)."""
        return Call(command=command, raw=True)


@dataclass(frozen=True)
class Offload:
    """Blocking work that is not a Redis call (an fsspec read or write of an artifact): the
    sync executor calls ``fn()`` in place, the asyncio one in a thread (the loop runs on);
    the op receives its return value (or its exception, raised into the op)."""

    fn: Callable[[], Any]


@dataclass(frozen=True)
class Batch:
    """Several calls sent in one round trip (a non-transactional pipeline)."""

    calls: Sequence[Call] = field(default_factory=tuple)
    reply_timeout: float | None = None  # as Call.reply_timeout, for the whole round trip


#: What a blocking call's reply may take beyond its block time before the connection is
#: presumed dead (``reply_timeout`` = block time + this): a parked worker notices a
#: half-open connection within its block time (<= 5 s) + 3 s, not at the 30 s socket timeout.
BLOCK_REPLY_MARGIN_S = 3.0


class DeadConnectionError(redis.ConnectionError):
    """No reply within a step's ``reply_timeout``: the connection was closed."""


@dataclass(frozen=True)
class Pause:
    """Wait ``seconds`` without a Redis call (``time.sleep`` / ``asyncio.sleep``): an op that
    polls lets news pile up between reads instead of reading each piece alone."""

    seconds: float


Step = Call | Batch | Offload | Pause
Op = Generator[Step, Any, T]

_CONN_ERRORS = (redis.ConnectionError, redis.TimeoutError)


def _unavailable(client: Any, exc: BaseException) -> RedisUnavailableError:
    return RedisUnavailableError(f"Redis is unavailable at {describe_client(client)}: {exc}")


_QUEUE_IN_KEY = re.compile(r"\{([^}]*)\}")


def _step_queue(step: Call | Batch | Offload) -> str | None:
    """The queue a step works on: the hash tag of its first key."""
    if isinstance(step, Offload):
        return None
    call = step if isinstance(step, Call) else (step.calls[0] if step.calls else None)
    if call is None:
        return None
    key = call.keys[0] if call.keys else (call.command[1] if call.command and
                                          len(call.command) > 1 else None)
    m = _QUEUE_IN_KEY.search(str(key)) if key is not None else None
    return m.group(1) if m else None


_STEP_ERRORS = (*_CONN_ERRORS, redis.ResponseError)


def _step_error(client: Any, step: Call | Batch | Offload,
                exc: Exception) -> RedisUnavailableError | RedisOutOfMemoryError | None:
    """The nbqueue error a failed step becomes (both executors), None: re-raise it as is."""
    if isinstance(exc, redis.ResponseError):
        return _out_of_memory(client, step, exc)
    return _unavailable(client, exc)


def _out_of_memory(client: Any, step: Call | Batch | Offload,
                   exc: redis.ResponseError) -> RedisOutOfMemoryError | None:
    """``exc`` as :class:`RedisOutOfMemoryError` naming the queue, if it is Redis refusing a
    write for want of memory (``-OOM``, also as wrapped by Redis 6 inside a script error)."""
    if not isinstance(exc, OutOfMemoryError) and "OOM command not allowed" not in str(exc):
        return None
    queue = _step_queue(step)
    what = f"queue {queue!r}" if queue else "nbqueue"
    return RedisOutOfMemoryError(
        f"Redis at {describe_client(client)} is out of memory (used memory > maxmemory, "
        f"policy noeviction): {what} cannot store more now. Nothing of this call was written. "
        "Workers still finish jobs and retention frees memory; or remove/clean jobs, lower "
        "remove_on_complete/remove_on_fail, or raise maxmemory.", queue)


#: How long a call is sent again while Redis answers ``BUSY`` (a script or function of
#: another client runs past ``busy-reply-threshold``; Redis ran nothing of the call), with
#: back-off from ``BUSY_FIRST_DELAY_S`` doubling up to ``BUSY_MAX_DELAY_S``; after that the
#: call raises :class:`RedisBusyError`.
BUSY_RETRY_S = 30.0
BUSY_FIRST_DELAY_S = 0.01
BUSY_MAX_DELAY_S = 0.5


def _is_busy(res: object) -> bool:
    return isinstance(res, redis.ResponseError) and not isinstance(res, RedisBusyError) \
        and str(res).startswith("BUSY ")


class _BusyBackoff:
    """The waits between re-sends of one call that Redis answered ``BUSY``."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + BUSY_RETRY_S
        self.delay = BUSY_FIRST_DELAY_S

    def next_delay(self, client: Any, call: Call, exc: BaseException) -> float:
        """Seconds to wait before the next try; raises RedisBusyError when time is up."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            what = f"script {call.script}" if call.script else f"command {call.command!r:.40}"
            raise RedisBusyError(
                f"Redis at {describe_client(client)} answered BUSY for {BUSY_RETRY_S:g} s "
                f"(another client's script runs long; SCRIPT KILL stops it): {what} was not "
                f"run. {exc}") from None
        delay, self.delay = min(self.delay, left), min(self.delay * 2, BUSY_MAX_DELAY_S)
        return delay


def _script_call_args(call: Call) -> tuple[Any, ...]:
    script = scripts.get(call.script)  # type: ignore[arg-type]
    return (script.sha, len(call.keys), *call.keys, *call.args)


#: Commands whose raw reply every op reads as well as redis-py's parsed one: BLPOP (a list
#: for a tuple), WAIT and HMGET (the same integer, list), and the stream reads (``[id,
#: [field, value, ...]]`` entries for ``(id, {field: value})``: ``records.entry_fields``
#: takes both). Other commands keep the reply parsing redis-py does for them (HGETALL...).
RAW_REPLY_OK = frozenset(("BLPOP", "WAIT", "HGET", "HMGET", "XREAD", "XRANGE", "XREVRANGE"))


def _direct_ok(call: Call) -> bool:
    return call.command is None or call.command[0] in RAW_REPLY_OK


def _wire(call: Call) -> tuple[Any, ...]:
    if call.command is not None:
        return call.command
    return ("EVALSHA", *_script_call_args(call))


def _direct_plan(client: Any, calls: Sequence[Call]
                 ) -> tuple[direct.Lane, list[Any], tuple[bool, ...]] | None:
    """The client's direct lane, the wire form of ``calls`` and which replies stay bytes
    (``Call.raw``: an artifact's Arrow data); None: redis-py's own path."""
    lane = direct.lane(client)
    if lane is None or not all(_direct_ok(c) for c in calls):
        return None
    return lane, [_wire(c) for c in calls], tuple(c.raw for c in calls)


def _pipe(client: Any, batch: Batch) -> Any:
    pipe = client.pipeline(transaction=False)
    for call in batch.calls:
        if call.command is not None:
            pipe.execute_command(*call.command, **(_RAW if call.raw else {}))
        else:
            pipe.evalsha(*_script_call_args(call))
    return pipe


def _raise_errors(results: Sequence[Any], calls: Sequence[Call] = ()) -> list[Any]:
    for i, res in enumerate(results):
        if isinstance(res, Exception) and not (
                i < len(calls) and calls[i].optional and isinstance(res, redis.ResponseError)):
            raise res
    return list(results)


_RAW = {NEVER_DECODE: True}


def _exec_sync(client: redis.Redis, call: Call) -> Any:
    if call.command is not None and not call.optional and _direct_ok(call):
        plan = _direct_plan(client, (call,))
        if plan is not None:
            return _raise_errors(direct.call_sync(*plan))[0]
    if call.command is not None:
        if call.optional:
            try:
                return client.execute_command(*call.command, **(_RAW if call.raw else {}))
            except redis.ResponseError as exc:
                return exc
        return client.execute_command(*call.command, **(_RAW if call.raw else {}))
    plan = _direct_plan(client, (call,))
    try:
        if plan is None:
            return client.evalsha(*_script_call_args(call))
        return _raise_errors(direct.call_sync(*plan))[0]
    except NoScriptError:
        script = scripts.get(call.script)  # type: ignore[arg-type]
        return client.eval(script.source, len(call.keys), *call.keys, *call.args)


def _exec_sync_busy(client: redis.Redis, call: Call) -> Any:
    """:func:`_exec_sync`, sent again with back-off while Redis answers BUSY."""
    backoff: _BusyBackoff | None = None
    while True:
        try:
            reply = _exec_sync(client, call)
        except redis.ResponseError as exc:
            if not _is_busy(exc):
                raise
            reply = exc
        if not _is_busy(reply):
            return reply
        backoff = backoff or _BusyBackoff()
        time.sleep(backoff.next_delay(client, call, reply))


def _batch_sync(client: redis.Redis, batch: Batch) -> list[Any]:
    if _sequential(client, batch):
        return [_exec_sync_busy(client, call) for call in batch.calls]
    plan = _direct_plan(client, batch.calls)
    results = (direct.call_sync(*plan) if plan is not None
               else _pipe(client, batch).execute(raise_on_error=False))
    # A restarted Redis forgets its scripts: re-run only the calls that said NOSCRIPT.
    # ... and the calls Redis answered BUSY (it ran none of them), in order
    for i, (call, res) in enumerate(zip(batch.calls, results)):
        if isinstance(res, NoScriptError) or _is_busy(res):
            results[i] = _exec_sync_busy(client, call)
    return _raise_errors(results, batch.calls)


def _revived(client: Any) -> bool:
    """For a client of the embedded server (``connect()`` tags it): restart that server if
    it is dead (see :func:`nbqueue.server.revive`); True when the failed step may be sent
    again. False for every other client."""
    home = getattr(client, "_nbqueue_embedded", None)
    if home is None:
        return False
    from .server import revive  # late: server is only needed here

    return revive(home)


def _step_sync(client: redis.Redis, step: Call | Batch) -> Any:
    try:
        return _exec_sync_busy(client, step) if isinstance(step, Call) \
            else _batch_sync(client, step)
    except _CONN_ERRORS:
        if not _revived(client):
            raise
    return _exec_sync_busy(client, step) if isinstance(step, Call) \
        else _batch_sync(client, step)


async def within(coro: Coroutine[Any, Any, T], secs: float) -> T:
    """``asyncio.wait_for`` without its extra task (and loop pass) per call on 3.11+: a
    worker's every fetch, finish and park has a reply deadline (``direct.LEAN_IO``)."""
    if sys.version_info >= (3, 11) and direct.LEAN_IO.get():
        async with asyncio.timeout(secs):
            return await coro
    return await asyncio.wait_for(coro, secs)  # Python 3.10; an asyncio-mode worker


async def _step_async(client: aredis.Redis, step: Call | Batch) -> Any:
    if step.reply_timeout is not None:
        # Cancelling the read closes its connection (direct lane and redis-py alike), so
        # nothing is read from a dead socket later; the step is not re-sent.
        try:
            return await within(_step_async_once(client, step), step.reply_timeout)
        except asyncio.TimeoutError:
            # The network to Redis dropped this connection; its pool's others are suspect
            # too (a call on one would hang for the socket timeout): all reconnect.
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                with contextlib.suppress(Exception):
                    await pool.disconnect()
            raise DeadConnectionError(
                f"no reply within {step.reply_timeout:.1f} s: the connection is presumed "
                "dead (half-open: dropped without FIN/RST, e.g. by a NAT or firewall) and "
                "was closed; the next call opens a new one") from None
    return await _step_async_once(client, step)


async def _step_async_once(client: aredis.Redis, step: Call | Batch) -> Any:
    try:
        if isinstance(step, Call):
            return await _exec_async_busy(client, step)
        return await _batch_async(client, step)
    except _CONN_ERRORS:
        if not await asyncio.to_thread(_revived, client):
            raise
    if isinstance(step, Call):
        return await _exec_async_busy(client, step)
    return await _batch_async(client, step)


def run_sync(client: redis.Redis, op: Op[T]) -> T:
    """Drive ``op`` to completion with a blocking redis-py client."""
    try:
        step = next(op)
        while True:
            if isinstance(step, Offload):
                try:
                    offloaded = step.fn()
                except Exception as exc:  # raised into the op, which may handle it
                    step = op.throw(exc)
                    continue
                step = op.send(offloaded)
                continue
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                step = op.send(None)
                continue
            try:
                reply: Any = _step_sync(client, step)
            except _STEP_ERRORS as exc:
                error = _step_error(client, step, exc)
                if error is None:
                    raise
                op.close()
                raise error from exc
            step = op.send(reply)
    except StopIteration as stop:
        return stop.value


async def _exec_async(client: aredis.Redis, call: Call) -> Any:
    if call.command is not None and not call.optional and _direct_ok(call):
        plan = _direct_plan(client, (call,))
        if plan is not None:
            return _raise_errors(await direct.call_async(*plan))[0]
    if call.command is not None:
        if call.optional:
            try:
                return await client.execute_command(*call.command,
                                                    **(_RAW if call.raw else {}))
            except redis.ResponseError as exc:
                return exc
        return await client.execute_command(*call.command, **(_RAW if call.raw else {}))
    plan = _direct_plan(client, (call,))
    try:
        if plan is None:
            return await client.evalsha(*_script_call_args(call))
        return _raise_errors(await direct.call_async(*plan))[0]
    except NoScriptError:
        script = scripts.get(call.script)  # type: ignore[arg-type]
        return await client.eval(script.source, len(call.keys), *call.keys, *call.args)


def _sequential(client: Any, batch: Batch) -> bool:
    """Redis Cluster clients refuse scripts in pipelines: run such a batch call by call
    (all of one queue's keys share a slot, so the calls still go to one node, in order)."""
    return isinstance(client, (redis.cluster.RedisCluster, aredis.cluster.RedisCluster)) \
        and any(call.script is not None for call in batch.calls)


async def _exec_async_busy(client: aredis.Redis, call: Call) -> Any:
    """:func:`_exec_async`, sent again with back-off while Redis answers BUSY."""
    backoff: _BusyBackoff | None = None
    while True:
        try:
            reply = await _exec_async(client, call)
        except redis.ResponseError as exc:
            if not _is_busy(exc):
                raise
            reply = exc
        if not _is_busy(reply):
            return reply
        backoff = backoff or _BusyBackoff()
        await asyncio.sleep(backoff.next_delay(client, call, reply))


async def _batch_async(client: aredis.Redis, batch: Batch) -> list[Any]:
    if _sequential(client, batch):
        return [await _exec_async_busy(client, call) for call in batch.calls]
    plan = _direct_plan(client, batch.calls)
    results = (await direct.call_async(*plan) if plan is not None
               else await _pipe(client, batch).execute(raise_on_error=False))
    for i, (call, res) in enumerate(zip(batch.calls, results)):
        if isinstance(res, NoScriptError) or _is_busy(res):
            results[i] = await _exec_async_busy(client, call)
    return _raise_errors(results, batch.calls)


async def run_async(client: aredis.Redis, op: Op[T]) -> T:
    """Drive ``op`` to completion with an asyncio redis-py client."""
    try:
        step = next(op)
        while True:
            if isinstance(step, Offload):
                try:
                    offloaded = await asyncio.to_thread(step.fn)
                except Exception as exc:  # raised into the op, which may handle it
                    step = op.throw(exc)
                    continue
                step = op.send(offloaded)
                continue
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
                step = op.send(None)
                continue
            try:
                reply: Any = await _step_async(client, step)
            except _STEP_ERRORS as exc:
                error = _step_error(client, step, exc)
                if error is None:
                    raise
                op.close()
                raise error from exc
            step = op.send(reply)
    except StopIteration as stop:
        return stop.value


def single(call: Call) -> Op[Any]:
    """An op of one call whose reply is returned as is."""
    return (yield call)


def together(ops: Sequence[Op[Any]]) -> Op[list[Any]]:
    """Run several ops in lockstep: the steps each one yields in a round go out as ONE
    batch (one round trip per round, however many ops); returns their values in order.
    How a batch of jobs of several queues, or a panel of many queues, reads in one trip."""
    if len(ops) == 1:
        return [(yield from ops[0])]
    values: list[Any] = [None] * len(ops)
    steps: dict[int, Step] = {}
    for i, op in enumerate(ops):
        try:
            steps[i] = next(op)
        except StopIteration as stop:
            values[i] = stop.value
    while steps:
        for i, step in list(steps.items()):
            while isinstance(step, (Offload, Pause)):  # not a Redis call: on its own
                try:
                    try:
                        done = yield step
                    except Exception as exc:  # raised into that op, which may handle it
                        step = ops[i].throw(exc)
                    else:
                        step = ops[i].send(done)
                except StopIteration as stop:
                    values[i] = stop.value
                    del steps[i]
                    break
            else:
                steps[i] = step
        if not steps:
            break
        calls: list[Call] = []
        spans: list[tuple[int, bool, int, int]] = []  # op, one call?, first reply, replies
        for i, step in steps.items():
            assert not isinstance(step, (Offload, Pause))
            part = [step] if isinstance(step, Call) else list(step.calls)
            spans.append((i, isinstance(step, Call), len(calls), len(part)))
            calls += part
        replies = yield Batch(calls)
        steps = {}
        for i, one, first, n in spans:
            try:
                steps[i] = ops[i].send(replies[first] if one else replies[first:first + n])
            except StopIteration as stop:
                values[i] = stop.value
    return values


# -- binding operations to the two executors --------------------------------------------
# A class defines each operation once, as a method returning an ``Op``; ``sync_method`` and
# ``async_method`` turn it into the blocking or awaitable public method. The owning class
# provides ``_run`` (sync: returns the value; asyncio: a coroutine).

P = ParamSpec("P")
S = TypeVar("S")


def sync_method(op: Callable[Concatenate[S, P], Op[T]]) -> Callable[Concatenate[S, P], T]:
    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(op(self, *args, **kwargs))  # type: ignore[attr-defined]

    functools.update_wrapper(method, op)
    return method


def by_name(kind: type[S], method: Callable[Concatenate[S, P], T],
            ) -> Callable[Concatenate[Any, str, P], T]:
    """``method`` of a queue class, as a manager method that takes the queue's name first
    (``queue_manager.get_job_status(name, id)`` is ``queue(name).get_job_status(id)``).
    ``kind`` is that queue class: it fixes the types (``nbqueue.Queue.add`` gives ``Job``)."""
    def call(self: Any, name: str, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self.queue(name), *args, **kwargs)

    functools.update_wrapper(call, method)
    return call


def async_method(
    op: Callable[Concatenate[S, P], Op[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    async def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(op(self, *args, **kwargs))  # type: ignore[attr-defined]

    functools.update_wrapper(method, op)
    return method
