"""Whether anyone consumes a queue, read from the worker registry (DESIGN "Named, durable
batches": ``wait()`` on a queue with no live worker says so).

A wait (``JobBatch.wait``/``results``, ``Job.result``) that has not ended ``GRACE_S`` seconds
in looks at the registry of the queues it waits on once: when none of a queue's workers has
a live registration (heartbeat within its ttl, and not a worker of this machine whose pid is
gone), it warns (``NoLiveWorkerWarning``), and a timeout's message says so instead of "they
keep running". Two round trips per queue, once per wait (and once at a timeout).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .keys import QueueKeys
from .protocol import Batch, Call, Op
from .reaper import is_gone, process_identity
from .records import pairs, parse_worker, reply_text
from .types import WorkerInfo

if TYPE_CHECKING:
    from .ops.base import OpsBase as QueueOps  # (keys and name are all it reads)

GRACE_S = 2.0  # a worker started with the jobs has registered by then


class NoLiveWorkerWarning(UserWarning):
    """A wait is waiting on a queue that no live worker consumes (none registered)."""


def read_workers(keys: QueueKeys) -> Op[list[WorkerInfo]]:
    """The workers registered for ``keys``' queue within their ttl, oldest first
    (``Queue.get_workers``)."""
    t, members = yield Batch([Call.cmd("TIME"),
                              Call.cmd("ZRANGE", keys.workers, 0, -1, "WITHSCORES")])
    now = int(t[0]) * 1000 + int(t[1]) // 1000
    ids = [reply_text(m) for m, score in pairs(members) if float(score) >= now]
    if not ids:
        return []
    hashes = yield Batch([Call.cmd("HGETALL", keys.worker(i)) for i in ids])
    out = [info for info in (parse_worker(i, h) for i, h in zip(ids, hashes)) if info]
    return sorted(out, key=lambda w: (w.started_at, w.id))


def queues_without_worker(queues: Sequence[QueueOps]) -> Op[list[str]]:
    """The names of ``queues`` with no live worker: none registered, or only workers of
    this machine whose process is gone (a killed kernel's, until its registration lapses;
    ``nbqueue.reaper``)."""
    me = process_identity()
    out = []
    for q in queues:
        workers = yield from read_workers(q.keys)
        if not any(not is_gone(w.host, w.pid, w.process, me) for w in workers):
            out.append(q.name)
    return out


def no_worker_text(names: Sequence[str]) -> str:
    """What a wait says about queues nobody consumes."""
    shown = ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
    first = names[0]
    return (f"no live worker consumes queue {shown} (none in its worker registry): its jobs "
            f"wait until one starts, e.g. queue_manager.start_worker({first!r}) in a "
            f"notebook or `nbqueue worker {first}` in a terminal")


@dataclass
class WorkerWatch:
    """The registry check of one wait: ``step`` warns once, ``GRACE_S`` in; ``note``
    gives a timeout's last words."""

    start: float = field(default_factory=time.monotonic)
    checked: bool = False

    def step(self, queues: Sequence[QueueOps]) -> Op[None]:
        """Once, ``GRACE_S`` into the wait: warn if no live worker consumes ``queues``."""
        if self.checked or time.monotonic() - self.start < GRACE_S:
            return
        self.checked = True
        names = yield from queues_without_worker(queues)
        if names:
            warnings.warn(NoLiveWorkerWarning(no_worker_text(names)), stacklevel=2)

    def note(self, queues: Sequence[QueueOps], default: str) -> Op[str]:
        """A timeout's explanation: who does not consume ``queues``, else ``default``."""
        names = yield from queues_without_worker(queues)
        return no_worker_text(names) if names else default
