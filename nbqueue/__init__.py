"""nbqueue: BullMQ-grade job queues for Python on Redis, with a Jupyter layer.

The blocking API lives here; ``nbqueue.aio`` has the same names, awaitable.
"""

from __future__ import annotations

from .connection import Connection, connect
from .errors import (
    InvalidOptionError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    NbqueueError,
    PayloadTooLargeError,
    RedisUnavailableError,
    SignatureError,
    UnknownQueueError,
    UnrecoverableError,
)
from .job import Job
from .manager import QueueManager
from .predefined import QueueName
from .queue import Queue
from .records import Event
from .types import JobPriority, JobState, JobStatus, QueueMetrics
from .worker import Worker

__version__ = "0.1.0"

queue_manager = QueueManager()

__all__ = [
    "Connection", "Event", "InvalidOptionError", "Job", "JobFailedError", "JobNotFoundError",
    "JobPriority", "JobState", "JobStatus", "JobTimeoutError", "NbqueueError",
    "PayloadTooLargeError", "Queue", "QueueManager", "QueueMetrics", "QueueName",
    "RedisUnavailableError", "SignatureError", "UnknownQueueError", "UnrecoverableError",
    "Worker", "connect", "queue_manager",
]
