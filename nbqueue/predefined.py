"""The seed's predefined queues: names, concurrency and rate limits (its "Queue Types")."""

from __future__ import annotations

import enum
from typing import Any


class QueueName(str, enum.Enum):
    """Predefined queue names; a ``str`` enum, usable wherever a queue name is."""

    WORKFLOW = "workflow"
    TOOL_EXECUTION = "tool_execution"
    LLM_REQUESTS = "llm_requests"
    NOTIFICATIONS = "notifications"
    WEBHOOKS = "webhooks"
    EMAIL = "email"
    DATA_PROCESSING = "data_processing"
    CACHE_WARMUP = "cache_warmup"
    DEAD_LETTER = "dead_letter"

    def __str__(self) -> str:
        return self.value


# The seed's table, exactly: concurrency and rate limit ({"max", "duration" ms}) per queue.
QUEUE_CONFIGS: dict[str, dict[str, Any]] = {
    QueueName.WORKFLOW.value: {"worker_concurrency": 5},
    QueueName.TOOL_EXECUTION.value: {"worker_concurrency": 10,
                                     "rate_limiter": {"max": 100, "duration": 1000}},
    QueueName.LLM_REQUESTS.value: {"worker_concurrency": 3,
                                   "rate_limiter": {"max": 10, "duration": 1000}},
    QueueName.NOTIFICATIONS.value: {"worker_concurrency": 20},
    QueueName.WEBHOOKS.value: {"worker_concurrency": 10},
    QueueName.EMAIL.value: {"worker_concurrency": 5},
    QueueName.DATA_PROCESSING.value: {"worker_concurrency": 3},
    QueueName.CACHE_WARMUP.value: {"worker_concurrency": 2},
    QueueName.DEAD_LETTER.value: {"worker_concurrency": 1},
}
