"""Script calls written straight onto a pooled connection.

redis-py's ``execute_command`` wraps every command in option parsing, observability hooks
and pool bookkeeping (under asyncio an awaited lock and several awaited recorders per
call): about 10 % of a script call on loopback, more of the worker's loop. nbqueue's hot
calls are ``EVALSHA``s (and the ``BLPOP`` before a fetch), whose raw replies need none of
that. A :class:`Lane` packs them with hiredis and writes them on connections it keeps
checked out of the client's own pool, under the client's own retry policy and health
checks. Cluster clients, single-connection clients and installs without hiredis keep the
ordinary path (:func:`lane` returns ``None``).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

import redis
import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_pack: Any
try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is a declared dependency
    _pack = None

_ATTR = "_nbqueue_lane"

#: Under asyncio, write and wait for replies without a task per call (``_send_async``,
#: ``protocol.within``). An asyncio-mode worker turns it off for its loop: there, the loop
#: passes those tasks cost were what let the job tasks finish while a flush was out, and
#: without them its flushes carried half as many jobs (0.07 -> 0.13 finish calls per job,
#: a 12 % slower drain of async jobs that each await Redis).
LEAN_IO: ContextVar[bool] = ContextVar("nbqueue_lean_io", default=True)


class Lane:
    """Idle connections of one client's pool, reused for direct calls.

    ``deque.pop``/``append`` are atomic, so threads sharing a sync client need no lock; a
    forked child drops what it inherited (those sockets belong to the parent)."""

    __slots__ = ("idle", "pid", "pool", "sentinel")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.idle: deque[Any] = deque()
        self.pid = os.getpid()
        # A Sentinel pool's connections find the primary in connect(); sending on a closed
        # one would reconnect to the address it had (the old primary, after a failover).
        self.sentinel = "Sentinel" in type(pool).__name__

    def _pop(self) -> Any | None:
        if self.pid != os.getpid():
            self.idle = deque()
            self.pid = os.getpid()
        try:
            return self.idle.pop()
        except IndexError:
            return None


def lane(client: Any) -> Lane | None:
    """The client's lane, or ``None`` when its calls must take redis-py's ordinary path."""
    found = getattr(client, _ATTR, None)
    if found is None:
        eligible = (_pack is not None and isinstance(client, (redis.Redis, aredis.Redis))
                    and getattr(client, "connection", None) is None)
        found = Lane(client.connection_pool) if eligible else False
        try:
            setattr(client, _ATTR, found)
        except AttributeError:
            return None
    return found if isinstance(found, Lane) else None


def pack(commands: Sequence[Sequence[Any]]) -> list[bytes]:
    return [b"".join([_pack(tuple(c)) for c in commands])]


def call_sync(ln: Lane, commands: Sequence[Sequence[Any]],
              raw: Sequence[bool] = ()) -> list[Any]:
    """Send ``commands`` in one write and read every reply; error replies come back as
    values (a pipeline's semantics), connection errors raise after the client's retries.
    ``raw[i]``: reply ``i`` stays bytes (the client decodes the others)."""
    raws = raw or (False,) * len(commands)
    packed = pack(commands)
    conn = ln._pop() or ln.pool.get_connection()

    def attempt() -> list[Any]:
        if ln.sentinel and conn._sock is None:
            conn.connect()  # asks the sentinels where the primary is now
        conn.send_packed_command(packed)
        out: list[Any] = []
        for r in raws:
            try:
                out.append(conn.read_response(disable_decoding=r))
            except ResponseError as exc:
                out.append(exc)
        return out

    try:
        return conn.retry.call_with_retry(attempt, lambda _e: conn.disconnect())
    except BaseException:
        conn.disconnect()  # replies may be left unread: never reuse the socket as is
        raise
    finally:
        ln.idle.append(conn)


async def _send_async(conn: Any, packed: list[bytes]) -> None:
    """``conn.send_packed_command`` without its ``asyncio.wait_for`` (a task and a loop
    pass per call, about a tenth of a worker's loop per job) around a drain that has nothing
    to wait for while the socket's buffer is not full; when it is, the drain is waited for
    under the connection's socket timeout, as redis-py does."""
    if conn.health_check_interval:
        await conn.check_health()  # a PING only when one is due (it may reconnect)
    writer = getattr(conn, "_writer", None)
    if writer is None or writer.transport.is_closing():
        await conn.send_packed_command(packed, check_health=False)  # connects first
        return
    try:
        writer.writelines(packed)
        if writer.transport.get_write_buffer_size():
            if conn.socket_timeout:
                await asyncio.wait_for(writer.drain(), conn.socket_timeout)
            else:
                await writer.drain()
    except asyncio.TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout writing to socket") from None
    except (OSError, RuntimeError) as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc


async def call_async(ln: Lane, commands: Sequence[Sequence[Any]],
                     raw: Sequence[bool] = ()) -> list[Any]:
    """:func:`call_sync` for an asyncio client (cancellation closes the connection)."""
    raws = raw or (False,) * len(commands)
    packed = pack(commands)
    conn = ln._pop() or await ln.pool.get_connection()

    async def attempt() -> list[Any]:
        if ln.sentinel and not conn.is_connected:
            await conn.connect()  # asks the sentinels where the primary is now
        if LEAN_IO.get():
            await _send_async(conn, packed)
        else:
            await conn.send_packed_command(packed)
        out: list[Any] = []
        for r in raws:
            try:
                out.append(await conn.read_response(disable_decoding=r))
            except ResponseError as exc:
                out.append(exc)
        return out

    async def fail(_exc: BaseException) -> None:
        await conn.disconnect()

    try:
        return await conn.retry.call_with_retry(attempt, fail)
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
    finally:
        ln.idle.append(conn)
