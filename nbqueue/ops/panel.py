"""The notebook panel's snapshot: every queue it shows, read in ONE round trip.

``QueueOps.panel_read`` is one queue's part (counts, paused, finished totals, the active
jobs and their progress, the minutes of history it lacks, its worker registry);
:func:`read_panel` runs the parts of every queue shown, and the server's clock, together
(``protocol.together``: their calls go out as one batch). See ``nbqueue.ops`` for the map
of the operations; ``nbqueue.notebook.dashboard`` shows what this reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import Batch, Call, Op, single, together
from ..records import pairs, parse_worker, reply_text
from ..types import WorkerInfo
from .base import OpsBase

#: The counts a panel row shows, in ``PanelRead.counts`` order.
PANEL_STATES = ("waiting", "active", "delayed", "completed", "failed")
ACTIVE_SHOWN = 10  # active jobs whose progress a row averages


@dataclass
class PanelAsk:
    """What a panel asks of one queue besides its counts: the history minutes it lacks,
    the progress of the active jobs it saw last time, the hashes of the workers it saw."""

    minutes: Sequence[int] = ()
    active_ids: Sequence[str] = ()
    worker_ids: Sequence[str] = ()


@dataclass
class PanelRead:
    """One queue as the panel's refresh read it."""

    counts: dict[str, int]
    paused: bool
    held: int  # waiting-children: held until their dependencies end
    finished: float  # completed + failed, ever (the running totals): a rate's numerator
    active_ids: list[str]
    minutes: dict[int, tuple[int, int]]  # minute -> (completed, failed)
    progress: dict[str, Any]  # active job id -> its stored progress (JSON text)
    registered: list[tuple[str, float]]  # worker id, registration expiry (server ms)
    workers: dict[str, WorkerInfo] = field(default_factory=dict)  # of the ids asked


class PanelOps(OpsBase):
    """The panel's read of one queue (see the module docstring)."""

    def panel_read(self, ask: PanelAsk) -> Op[PanelRead]:
        k = self.keys
        calls = [Call.cmd("ZCARD", k.wait), Call.cmd("ZCARD", k.active),
                 Call.cmd("ZCARD", k.delayed), Call.cmd("ZCARD", k.completed),
                 Call.cmd("ZCARD", k.failed), Call.cmd("HGET", k.meta, "paused"),
                 Call.cmd("HMGET", k.stats, "completed", "failed"),
                 Call.cmd("ZRANGE", k.active, 0, ACTIVE_SHOWN - 1),
                 Call.cmd("ZCARD", k.waiting_children),
                 Call.cmd("ZRANGE", k.workers, 0, -1, "WITHSCORES")]
        calls += [Call.cmd("HMGET", k.minute(m), "completed", "failed") for m in ask.minutes]
        calls += [Call.cmd("HGET", k.job(i), "prog") for i in ask.active_ids]
        calls += [Call.cmd("HGETALL", k.worker(i)) for i in ask.worker_ids]
        r = yield Batch(calls)
        pos = 10
        minutes = {}
        for m in ask.minutes:
            c, f = r[pos]
            minutes[m] = (int(c or 0), int(f or 0))
            pos += 1
        progress = dict(zip(ask.active_ids, r[pos:pos + len(ask.active_ids)]))
        pos += len(ask.active_ids)
        workers = {}
        for wid, h in zip(ask.worker_ids, r[pos:pos + len(ask.worker_ids)]):
            info = parse_worker(wid, h)
            if info is not None:
                workers[wid] = info
        return PanelRead(
            counts=dict(zip(PANEL_STATES, (int(x) for x in r[:5]), strict=True)),
            paused=r[5] == "1", held=int(r[8]),
            finished=float(r[6][0] or 0) + float(r[6][1] or 0),
            active_ids=[reply_text(i) for i in r[7]], minutes=minutes, progress=progress,
            registered=[(reply_text(m), float(s)) for m, s in pairs(r[9])], workers=workers)


def read_panel(asks: Sequence[tuple[PanelOps, PanelAsk]]) -> Op[tuple[int, list[PanelRead]]]:
    """The server's clock (ms) and every queue's :class:`PanelRead`, in one round trip."""
    t, *reads = yield from together([single(Call.cmd("TIME")),
                                     *(ops.panel_read(ask) for ops, ask in asks)])
    return int(t[0]) * 1000 + int(t[1]) // 1000, reads
