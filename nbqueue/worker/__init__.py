"""The worker: an engine of small parts, and the ``Worker`` that runs it.

One engine (an asyncio loop) does all the Redis work of a worker: it fetches jobs in
batches, finishes them in batches (the finish call also fetches the next jobs), renews
locks, and sweeps stalled jobs. Sync processors run on job threads, async ones on the
loop. ``mode="thread"`` runs the engine on a background thread, ``mode="asyncio"`` on
the caller's running loop, ``mode="process"`` in N child processes.

Parts (each module one of them): ``front`` (``Worker``), ``process`` (process mode),
``engine`` (the loop that coordinates the others), ``fetching`` (fetch and park),
``execution`` (slots, runners, deadlines, ``classify``), ``outbox`` (outcomes, progress,
counters, dead letters, batched), ``upkeep`` (lock renewal, stalled sweep).
"""

from __future__ import annotations

import logging

from ..keys import DEAD_LETTER_QUEUE as DEAD_LETTER
from ..processor import Processor, is_async
from .engine import COALESCE_S, Engine, queue_job_factory
from .execution import Execution, JobFactory, classify, safe_classify
from .fetching import MAX_BLOCK_S, Fetcher
from .front import MODES, Worker, WorkerBase
from .outbox import STATS_EVERY_S, Outbox
from .threads import JobThreads
from .upkeep import Upkeep

log = logging.getLogger("nbqueue.worker")

__all__ = ["COALESCE_S", "DEAD_LETTER", "MAX_BLOCK_S", "MODES", "STATS_EVERY_S", "Engine",
           "Execution", "Fetcher", "JobFactory", "JobThreads", "Outbox", "Processor",
           "Upkeep", "Worker", "WorkerBase", "classify", "is_async", "queue_job_factory",
           "safe_classify"]
