"""The base of every queue's operations: its keys, script calls and name registration.

See ``nbqueue.ops`` (the package) for the map of the operations.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import serialization
from ..errors import InvalidOptionError, NotReplicatedError
from ..keys import DEFAULT_PREFIX, QueueKeys, registry_key
from ..options import JobOptions, default_options
from ..protocol import Batch, Call, Op

_log = logging.getLogger("nbqueue.ops")
EVENTS_MAXLEN = 10_000
REGISTER_EVERY_S = 60.0  # how often a queue object re-adds its name to the registry
#: How long Redis remembers an add call's idempotency token (ms). It must outlast the
#: client's whole retry sequence (``connection.SOCKET_TIMEOUT`` x (``RETRIES`` + 1) plus
#: back-off and connect time, ~2 min); a re-send after that would add the jobs again.
#: Cost: one key of ~180 bytes per add call (not per job of a bulk) while it lives; the
#: same process's next add to the queue deletes it (``ACKS``).
ADD_TOKEN_TTL_MS = 180_000
#: At most this many acknowledged tokens ride along with one add call.
MAX_ACKS_PER_ADD = 64
#: Tokens of add calls whose reply this process has received, by queue key prefix: the
#: next add call to that queue (any ``QueueOps`` of the process, any thread) deletes them in
#: its script (add.lua), so live tokens stay at about one per (process, queue) whatever the
#: add rate (docs/reliability.md "Durability rules"). A token acknowledged that way is never
#: needed again: only a re-send of its own call (which already got its reply) would read it.
ACKS: dict[str, collections.deque[str]] = {}


class OpsBase:
    """One queue's keys and options, how its scripts are called, and its registration in
    the registry of queue names (which rides along with an add or a heartbeat)."""

    def __init__(self, name: str, *, prefix: str = DEFAULT_PREFIX,
                 default_job_options: Mapping[str, Any] | JobOptions | None = None,
                 max_payload_bytes: int = serialization.DEFAULT_HARD_LIMIT,
                 events_maxlen: int = EVENTS_MAXLEN,
                 add_token_ttl_ms: int = ADD_TOKEN_TTL_MS) -> None:
        self.keys = QueueKeys(name, prefix)
        self.add_token_ttl_ms = add_token_ttl_ms
        self.name = self.keys.name
        self.defaults = (default_job_options if isinstance(default_job_options, JobOptions)
                         else default_options(default_job_options))
        if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int) \
                or max_payload_bytes < 1:
            raise InvalidOptionError(f"max_payload_bytes must be a positive int: "
                                     f"{max_payload_bytes!r}")
        self.max_payload_bytes = max_payload_bytes
        self.events_maxlen = events_maxlen
        # When this object last put the queue's name in the registry (keys.registry_key):
        # the SADD rides in the pipeline of an add (no extra round trip), at most once a
        # minute, so a queue obliterated elsewhere and added to again comes back.
        self.registered_at = -REGISTER_EVERY_S
        # connect(..., min_replicas=N): adds wait for N replicas (set by the Queue from its
        # Connection; the engine's own adds, dead letters, keep 0)
        self.min_replicas = 0
        self.replica_timeout_ms = 0

    # -- building blocks -------------------------------------------------------------
    def call(self, script: str, *args: Any) -> Call:
        """A call of ``script`` with the queue's key prefix and the common ARGV prologue."""
        return Call(script, self.keys.script_keys,
                    (self.keys.job_prefix, "", self.events_maxlen, *args))

    # -- the registry of queue names -----------------------------------------------------
    def register_call(self) -> Call:
        """Add this queue's name to the registry that scrapes and ``nbqueue stats`` read.
        Optional: an ACL user without access to the registry key still adds jobs."""
        return Call(command=("SADD", registry_key(self.keys.prefix), self.name),
                    optional=True)

    def note_registration(self, reply: Any) -> None:
        """Note a registration's reply (a refused one is logged once per object)."""
        if isinstance(reply, Exception) and self.registered_at < 0:
            _log.warning("queue %r: could not add its name to %s (%s); scrapes and "
                         "`nbqueue stats` of this Redis need the queue names given "
                         "explicitly", self.name, registry_key(self.keys.prefix), reply)
        self.registered_at = time.monotonic()

    def registering(self, call: Call) -> Op[Any]:
        """``call``'s reply; the queue's registration rides in the same pipeline when due
        (once a minute per object: no extra round trip, the direct lane otherwise)."""
        if time.monotonic() - self.registered_at < REGISTER_EVERY_S:
            return (yield call)
        reply, registered = yield Batch([call, self.register_call()])
        self.note_registration(registered)
        return reply

    def replicated(self, call: Call) -> Op[tuple[Any, int | None]]:
        """``call``'s reply and, on a ``min_replicas`` connection, how many replicas hold
        it: ``WAIT`` rides in the same pipeline, so it runs on the connection that wrote
        (None: no WAIT asked). The registration rides along when due (:meth:`registering`).
        """
        if not self.min_replicas:
            return (yield from self.registering(call)), None
        due = time.monotonic() - self.registered_at >= REGISTER_EVERY_S
        wait = self.wait_call()
        replies = yield Batch([call, self.register_call(), wait] if due else [call, wait])
        if due:
            self.note_registration(replies[1])
        return replies[0], int(replies[-1])

    def wait_call(self) -> Call:
        """``WAIT min_replicas timeout``: how many replicas hold this connection's writes."""
        return Call.cmd("WAIT", self.min_replicas, self.replica_timeout_ms)

    def not_replicated(self, acked: int, ids: Sequence[str], unsent: int = 0) -> None:
        """Raise :class:`NotReplicatedError`: ``ids`` were written, fewer replicas than
        ``min_replicas`` confirmed them."""
        shown = ", ".join(ids[:10]) + (f" ... ({len(ids)} jobs)" if len(ids) > 10 else "")
        rest = f"; the {unsent} later item(s) of the call were not sent" if unsent else ""
        raise NotReplicatedError(
            f"queue {self.name!r}: job(s) {shown} were written on the primary, but only "
            f"{acked} of the {self.min_replicas} replica(s) asked for (connect(..., "
            f"min_replicas={self.min_replicas})) confirmed them within "
            f"{self.replica_timeout_ms} ms{rest}. The jobs ARE stored and will run unless "
            "the primary fails before a replica has them; adding them again adds them "
            "twice unless they have a job_id.", queue=self.name, job_ids=list(ids),
            acked=acked, wanted=self.min_replicas)

    def ensure_registered(self) -> Op[None]:
        """One SADD unless this object registered the queue in the last minute."""
        if time.monotonic() - self.registered_at >= REGISTER_EVERY_S:
            self.note_registration((yield self.register_call()))
