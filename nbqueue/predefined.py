"""The seed's predefined queues ("Queue Types") and its helpers ("Using Predefined Queues").

``QueueName`` and ``QUEUE_CONFIGS`` give the seed's table exactly: names, concurrency and
rate limits. ``queue_service.initialize()`` creates every predefined queue (writing its rate
limit, or clearing a stale one, in Redis) and starts a worker for each queue that has a
processor registered with ``queue_manager.register_processor``; ``shutdown()`` stops them.
``queue_workflow``, ``queue_llm_request`` and ``queue_notification`` add the seed's jobs and
return the job id. The same names in ``nbqueue.aio`` are awaitable.

This module is pure (no manager): the job builders below say what each helper adds, and the
facades (``nbqueue``, ``nbqueue.aio``) own the functions that add them through their
default ``queue_manager``, and the ``queue_service`` bound to it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
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


# -- the seed's jobs (pure: the queue, the data and the options of each helper) -----------
def workflow_job(workflow_name: str, input: Mapping[str, Any] | None = None, *,
                 priority: Any = None, **opts: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``{"type": "workflow", "payload": {"workflow_name", "input"}}`` on ``workflow``."""
    if not isinstance(workflow_name, str) or not workflow_name:
        raise TypeError("workflow_name must be a non-empty str")
    data = {"type": "workflow",
            "payload": {"workflow_name": workflow_name, "input": dict(input or {})}}
    return QueueName.WORKFLOW.value, data, {"priority": priority, **opts}


def llm_request_job(model: str, prompt: str, *, priority: Any = None,
                    **opts: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``{"type": "llm_request", "payload": {"model", "prompt"}}`` on ``llm_requests``."""
    if not isinstance(model, str) or not isinstance(prompt, str):
        raise TypeError("model and prompt must be str")
    data = {"type": "llm_request", "payload": {"model": model, "prompt": prompt}}
    return QueueName.LLM_REQUESTS.value, data, {"priority": priority, **opts}


def notification_job(user_id: str, message: str, *, channel: str | None = None,
                     **opts: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``{"type": "notification", "payload": {"message", "channel"}, "user_id"}`` on
    ``notifications``; ``channel`` defaults to ``"in_app"``."""
    if not isinstance(message, str):
        raise TypeError("message must be a str")
    data = {"type": "notification", "user_id": str(user_id),
            "payload": {"message": message, "channel": channel or "in_app"}}
    return QueueName.NOTIFICATIONS.value, data, opts


# -- queue_service ----------------------------------------------------------------------
class _ServiceBase:
    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.started: list[str] = []  # queues whose workers initialize() started

    def _queues(self) -> list[Any]:
        """Every predefined queue, created with the seed's settings on first use."""
        return [self.manager.get_queue(n.value) for n in QueueName]

    def _with_processor(self) -> list[str]:
        registered = {str(getattr(k, "value", k)) for k in self.manager._processors}
        return [n.value for n in QueueName if n.value in registered]


class QueueService(_ServiceBase):
    """The seed's ``queueService`` over ``manager`` (``nbqueue.queue_service``: over
    ``nbqueue.queue_manager``)."""

    def initialize(self, *, mode: str = "thread", **worker_options: Any) -> list[str]:
        """Create all predefined queues (rate limits written to Redis) and start a worker
        (``mode``) for each that has a registered processor; returns those queue names."""
        for q in self._queues():
            q._run(q.ops.set_rate_limit(q.rate_limiter))
        for name in self._with_processor():
            self.manager.start_worker(name, mode=mode, **worker_options)
            if name not in self.started:
                self.started.append(name)
        return list(self.started)

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the workers ``initialize()`` started (gracefully: active jobs finish)."""
        for name in reversed(self.started):
            self.manager.stop_worker(name, timeout)
        self.started = []


class AsyncQueueService(_ServiceBase):
    """``nbqueue.aio.queue_service``: awaitable ``initialize()``/``shutdown()``."""

    async def initialize(self, *, mode: str = "asyncio", **worker_options: Any) -> list[str]:
        """See :meth:`QueueService.initialize`; workers default to the running loop."""
        for q in self._queues():
            await q._run(q.ops.set_rate_limit(q.rate_limiter))
        for name in self._with_processor():
            await self.manager.start_worker(name, mode=mode, **worker_options)
            if name not in self.started:
                self.started.append(name)
        return list(self.started)

    async def shutdown(self, timeout: float | None = None) -> None:
        for name in reversed(self.started):
            await self.manager.stop_worker(name, timeout)
        self.started = []


__all__ = ["QUEUE_CONFIGS", "AsyncQueueService", "QueueName", "QueueService",
           "llm_request_job", "notification_job", "workflow_job"]
