"""The worker: an engine of small parts, and the ``Worker`` that runs it.

One engine (an asyncio loop) does all the Redis work of a worker: it fetches jobs in
batches, finishes them in batches (the finish call also fetches the next jobs), renews
locks, and sweeps stalled jobs. ``mode="thread"`` runs the engine on a background thread,
``mode="asyncio"`` on the caller's running loop, ``mode="process"`` in the parent while N
child processes run the job bodies.

Parts (each module one of them): ``front`` (``Worker``, ``WorkerBase``), ``engine`` (the
loop that coordinates the others), ``fetching`` (fetch and park), ``execution`` (slots,
ready jobs, deadlines), ``runners`` (the run modes as strategies: ``ThreadRunner``,
``AsyncRunner``; ``process.ProcessRunner``, whose children run ``child``), ``body`` (ONE
job body for every mode: capture, per-job hooks, the processor, ``classify``),
``capture`` (output to the job's log), ``outbox`` (outcomes, progress, counters, dead
letters, batched), ``upkeep`` (lock renewal, stalled sweep, heartbeat, cancel listener,
flows). Architecture: docs/architecture.md.
"""

from __future__ import annotations

from .body import JobHook
from .front import MODES, Worker, WorkerBase
from .process import ProcessRunner
from .runners import AsyncRunner, Runner, ThreadRunner

__all__ = ["MODES", "AsyncRunner", "JobHook", "ProcessRunner", "Runner", "ThreadRunner",
           "Worker", "WorkerBase"]
