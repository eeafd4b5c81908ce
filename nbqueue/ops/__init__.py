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
  metrics, stats, history), control (pause, drain, clean, retry, remove, obliterate,
  promote, priority, data, deduplication, global concurrency), logs, ``cancel`` and
  ``cancel_many``, ``retry_jobs``, events, ``outcomes`` (how jobs ended: ``wait_result``
  and ``JobBatch``);
- ``worker.WorkerOps``: the worker registry (``heartbeat``, ``get_workers``), fetch, park
  (``block_and_fetch``), ``finish`` (which also fetches), lock renewal, stalled sweep.

Every Lua script, with one line each: docs/architecture.md.
"""

from __future__ import annotations

from ..records import Outcome, OutcomeKind, dead_letter_entry
from .base import ADD_TOKEN_TTL_MS, EVENTS_MAXLEN, REGISTER_EVERY_S, OpsBase
from .jobs import (
    BULK_CHUNK_BYTES,
    BULK_CHUNK_JOBS,
    LOG_CAP_LINES,
    SWEEP_CHUNK_JOBS,
    JobOps,
    new_token,
    now_ms,
)
from .worker import WorkerOps

__all__ = ["ADD_TOKEN_TTL_MS", "BULK_CHUNK_BYTES", "BULK_CHUNK_JOBS", "EVENTS_MAXLEN",
           "LOG_CAP_LINES", "REGISTER_EVERY_S", "SWEEP_CHUNK_JOBS", "JobOps", "OpsBase", "Outcome",
           "OutcomeKind", "QueueOps", "WorkerOps", "dead_letter_entry", "new_token",
           "now_ms"]


class QueueOps(JobOps, WorkerOps):
    """The operations of one queue, as generators of Redis calls."""

