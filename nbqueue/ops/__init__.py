"""Every queue operation, written once as a sans-I/O generator (see ``protocol``): the one
owner of nbqueue's data model in Redis.

``QueueOps`` builds script calls and parses replies; the sync ``Queue``, the asyncio
``nbqueue.aio.Queue``, their jobs and batches, the notebook panel and the worker engine run
these same generators with one of the two executors of ``nbqueue.protocol``. No other
module builds a call of queue state or reads a script's reply, except ``nbqueue.flows``
(the dependency protocol: operations across several queues, run on ``QueueOps`` siblings),
``nbqueue.scheduler`` (recurring jobs) and ``nbqueue.metrics`` (the Prometheus scrape).

The operations, by who runs them (one module each):

- ``base.OpsBase``: keys, ``call`` (a script with the queue's prologue), the registry of
  queue names;
- ``jobs.JobOps``: producers (``add``, ``add_bulk``, dead letters), reading (jobs,
  metrics, stats, history), progress, logs, events, ``outcomes`` (how jobs ended: what
  ``wait_result`` and ``JobBatch`` read), ``sibling`` (another queue's ops, for flows);
- ``control.ControlOps``: control (pause, drain, clean, retry, remove, obliterate,
  promote, priority, data, deduplication, rate limit, global concurrency), ``cancel`` and
  ``cancel_many``, ``retry_jobs``;
- ``worker.WorkerOps``: the worker registry (``heartbeat``, ``get_workers``), fetch, park
  (``block_and_fetch``), ``finish`` (which also fetches), lock renewal, stalled sweep;
- ``panel.PanelOps``: the notebook panel's snapshot (``panel_read``; ``read_panel`` reads
  every queue shown in one round trip).

Every Lua script, with one line each: docs/architecture.md.
"""

from __future__ import annotations

from ..records import Outcome, OutcomeKind, dead_letter_entry
from .base import ADD_TOKEN_TTL_MS, EVENTS_MAXLEN, REGISTER_EVERY_S, OpsBase
from .control import SWEEP_CHUNK_JOBS, ControlOps
from .jobs import BULK_CHUNK_BYTES, BULK_CHUNK_JOBS, LOG_CAP_LINES, JobOps, new_token, now_ms
from .panel import PanelAsk, PanelOps, PanelRead, read_panel
from .worker import WorkerOps

__all__ = ["ADD_TOKEN_TTL_MS", "BULK_CHUNK_BYTES", "BULK_CHUNK_JOBS", "EVENTS_MAXLEN",
           "LOG_CAP_LINES", "REGISTER_EVERY_S", "SWEEP_CHUNK_JOBS", "ControlOps", "JobOps",
           "OpsBase", "Outcome", "OutcomeKind", "PanelAsk", "PanelOps", "PanelRead",
           "QueueOps", "WorkerOps", "dead_letter_entry", "new_token", "now_ms",
           "read_panel"]


class QueueOps(ControlOps, WorkerOps, PanelOps):
    """The operations of one queue, as generators of Redis calls."""

