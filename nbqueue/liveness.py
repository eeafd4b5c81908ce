"""Whether anyone consumes a queue, read from the worker registry (DESIGN "Named, durable
batches": ``wait()`` on a queue with no live worker says so).

A wait (``JobBatch.wait``/``results``, ``Job.result``) that has not ended ``GRACE_S`` seconds
in looks at the registry of the queues it waits on once: when none of a queue's workers has
a live registration (heartbeat within its ttl), it warns (``NoLiveWorkerWarning``), and a
timeout's message says so instead of "they keep running". One round trip, once per wait.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .protocol import Batch, Call, Op

if TYPE_CHECKING:
    from .ops.base import OpsBase as QueueOps  # (keys and name are all it reads)

GRACE_S = 2.0  # a worker started with the jobs has registered by then


class NoLiveWorkerWarning(UserWarning):
    """A wait is waiting on a queue that no live worker consumes (none registered)."""


def queues_without_worker(queues: Sequence[QueueOps]) -> Op[list[str]]:
    """The names of ``queues`` with no live registration in their worker registry."""
    if not queues:
        return []
    replies = yield Batch([Call.cmd("TIME")] + [
        Call.cmd("ZRANGE", q.keys.workers, 0, -1, "WITHSCORES") for q in queues])
    t = replies[0]
    now = int(t[0]) * 1000 + int(t[1]) // 1000
    return [q.name for q, members in zip(queues, replies[1:])
            if not any(float(score) >= now for score in _scores(members))]


def _scores(members: Any) -> list[Any]:
    if not members:
        return []
    if isinstance(members[0], (list, tuple)):
        return [m[1] for m in members]
    return list(members[1::2])


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
