"""Value types shared by the whole package: states, priorities, metrics, status."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class JobState(str, enum.Enum):
    """Where a job is. A ``str`` enum: ``JobState.FAILED == "failed"``."""

    WAITING = "waiting"
    ACTIVE = "active"
    DELAYED = "delayed"
    COMPLETED = "completed"
    FAILED = "failed"
    PAUSED = "paused"  # reported for waiting jobs of a paused queue
    WAITING_CHILDREN = "waiting-children"  # added with depends_on: waits for those jobs
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


class JobPriority(enum.IntEnum):
    """Five strict priority levels; 1 runs first. FIFO within a level."""

    CRITICAL = 1
    HIGH = 2
    NORMAL = 3
    LOW = 4
    BACKGROUND = 5


@dataclass(frozen=True)
class QueueMetrics:
    """Counts of one queue. ``total`` = waiting + active + delayed + waiting_children
    (pending work); ``waiting_children``: jobs held until their dependencies complete."""

    queue_name: str
    waiting: int
    active: int
    completed: int
    failed: int
    delayed: int
    paused: bool
    total: int
    waiting_children: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job, as ``get_job_status`` returns it.

    ``processed_on`` and ``finished_on`` are epoch milliseconds (as in BullMQ).
    """

    id: str
    name: str
    data: dict[str, Any]
    state: JobState
    progress: Any
    attempts_made: int
    processed_on: int | None
    finished_on: int | None
    returnvalue: Any
    failed_reason: str | None
    timestamp: int = 0
    priority: int = int(JobPriority.NORMAL)
    delay: int = 0
    error_type: str | None = None
    opts: dict[str, Any] = field(default_factory=dict)
    # one traceback per failed attempt (truncated, newest frames kept), newest last
    stacktrace: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d


@dataclass(frozen=True)
class WorkerInfo:
    """One registered worker, as ``Queue.get_workers()`` returns it.

    ``id`` is the worker's token (``<pid>-<hex>`` unless the worker was given a ``name``),
    ``mode`` is thread, asyncio or process, ``active`` the number of jobs it was running at
    its last heartbeat. ``started_at`` and ``last_heartbeat`` are epoch milliseconds from the
    Redis server's clock (as ``JobStatus.processed_on``). ``detached`` is the name of a
    detached worker (``start_worker(..., mode="process", detach=True)``; '' for a worker that
    lives in the process that started it); ``process`` identifies its process on its machine
    ("<boot id>/<pid namespace>/<start ticks>": how a worker on the same machine tells that
    it is gone, see ``nbqueue.reaper``).
    """

    id: str
    host: str
    pid: int
    mode: str
    concurrency: int
    active: int
    started_at: int
    last_heartbeat: int
    detached: str = ""
    process: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
