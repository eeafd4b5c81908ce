"""Predefined queues: the seed's table, queue_service, and its "Using Predefined Queues" example."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import nbqueue
import nbqueue.aio
from nbqueue import (
    JobPriority,
    QueueName,
    queue_llm_request,
    queue_manager,
    queue_notification,
    queue_service,
    queue_workflow,
    schedule_recurring_job,
)
from nbqueue.connection import Connection
from nbqueue.predefined import QUEUE_CONFIGS

SEED_TABLE = {  # the seed's "Queue Types" table: concurrency, rate limit (max per second)
    "WORKFLOW": (5, None), "TOOL_EXECUTION": (10, 100), "LLM_REQUESTS": (3, 10),
    "NOTIFICATIONS": (20, None), "WEBHOOKS": (10, None), "EMAIL": (5, None),
    "DATA_PROCESSING": (3, None), "CACHE_WARMUP": (2, None), "DEAD_LETTER": (1, None),
}


@pytest.fixture
def clean_managers(conn: Connection) -> Iterator[None]:
    """Processors registered on the global managers by a test do not leak into others."""
    yield
    for mgr in (nbqueue.queue_manager, nbqueue.aio.queue_manager):
        mgr.close()
        for name in [n.value for n in QueueName]:
            mgr._processors.pop(name, None)


def test_queue_names_and_configs_are_the_seed_table() -> None:
    assert [n.name for n in QueueName] == list(SEED_TABLE)
    for n in QueueName:
        concurrency, per_sec = SEED_TABLE[n.name]
        cfg = QUEUE_CONFIGS[n.value]
        assert cfg["worker_concurrency"] == concurrency
        expected = {"max": per_sec, "duration": 1000} if per_sec else None
        assert cfg.get("rate_limiter") == expected


def test_seed_example_sync(r: redis.Redis, clean_managers: None) -> None:
    seen: list[dict[str, Any]] = []

    def handle(job: Any) -> dict[str, Any]:
        seen.append(job.data)
        return {"success": True, "data": job.data["type"], "duration": 0}

    r.hset("nbq:{webhooks}:meta", mapping={"rl_max": 1, "rl_dur": 1000})  # stale: cleared
    for name in (QueueName.WORKFLOW, QueueName.LLM_REQUESTS, QueueName.NOTIFICATIONS):
        queue_manager.register_processor(name, handle)

    # -- the seed's "Using Predefined Queues", in Python --
    started = queue_service.initialize()
    job_id = queue_workflow("user_onboarding", {"user_id": "user123"},
                            priority=JobPriority.HIGH)
    llm_id = queue_llm_request("gpt-4", "Summarize this document...",
                               priority=JobPriority.HIGH)
    note_id = queue_notification("user123", "Your workflow is complete!", channel="email")
    # ------------------------------------------------------------------------------------

    assert sorted(started) == ["llm_requests", "notifications", "workflow"]
    assert queue_manager.get_job(QueueName.WORKFLOW, job_id).result(timeout=20)["data"] \
        == "workflow"
    assert queue_manager.get_job("llm_requests", llm_id).result(timeout=20)["success"]
    assert queue_manager.get_job("notifications", note_id).result(timeout=20)["success"]
    queue_service.shutdown()
    assert not any(w.is_running for w in queue_manager.workers.values())

    by_type = {d["type"]: d for d in seen}
    assert by_type["workflow"]["payload"] == {"workflow_name": "user_onboarding",
                                              "input": {"user_id": "user123"}}
    assert by_type["llm_request"]["payload"] == {"model": "gpt-4",
                                                 "prompt": "Summarize this document..."}
    assert by_type["notification"] == {"type": "notification", "user_id": "user123",
                                       "payload": {"message": "Your workflow is complete!",
                                                   "channel": "email"}}
    status = queue_manager.get_job_status("workflow", job_id)
    assert status is not None and status.priority == int(JobPriority.HIGH)
    # initialize() wrote the table's rate limits into Redis (and cleared a stale one)
    assert r.hmget("nbq:{llm_requests}:meta", "rl_max", "rl_dur") == ["10", "1000"]
    assert r.hmget("nbq:{tool_execution}:meta", "rl_max", "rl_dur") == ["100", "1000"]
    assert r.hget("nbq:{webhooks}:meta", "rl_max") is None
    # the seed's cron example on a predefined queue
    info = schedule_recurring_job(QueueName.EMAIL, {"type": "daily_digest", "payload": {}},
                                  "0 9 * * *")
    assert info.queue == "email" and info.next_run is not None
    assert info.next_run % 86_400_000 == 9 * 3_600_000  # 09:00 UTC


def test_seed_example_aio(r: redis.Redis, clean_managers: None) -> None:
    from nbqueue.aio import (
        queue_llm_request,
        queue_manager,
        queue_notification,
        queue_service,
        queue_workflow,
        schedule_recurring_job,
    )

    async def handle(job: Any) -> str:
        await asyncio.sleep(0)
        return str(job.data["type"])

    async def main() -> None:
        for name in (QueueName.WORKFLOW, QueueName.LLM_REQUESTS, QueueName.NOTIFICATIONS):
            queue_manager.register_processor(name, handle)
        await queue_service.initialize()
        job_id = await queue_workflow("user_onboarding", {"user_id": "user123"},
                                      priority=JobPriority.HIGH)
        llm_id = await queue_llm_request("gpt-4", "Summarize...", priority=JobPriority.HIGH)
        note_id = await queue_notification("user123", "Done!", channel="email")
        job = await queue_manager.get_job("workflow", job_id)
        assert await job.result(timeout=20) == "workflow"
        assert await (await queue_manager.get_job("llm_requests", llm_id)).result(20) \
            == "llm_request"
        assert await (await queue_manager.get_job("notifications", note_id)).result(20) \
            == "notification"
        info = await schedule_recurring_job(QueueName.CACHE_WARMUP,
                                            {"type": "warmup_cache", "payload": {}},
                                            "*/5 * * * *")
        assert info.next_run is not None and info.next_run % 300_000 == 0
        await queue_service.shutdown()
        for q in queue_manager.queues.values():
            await q.close()

    asyncio.run(main())
    assert r.hget("nbq:{llm_requests}:meta", "rl_max") == "10"


def test_helpers_validate_options(conn: Connection, clean_managers: None) -> None:
    with pytest.raises(nbqueue.InvalidOptionError):
        queue_workflow("wf", {}, priority=9)
    with pytest.raises(nbqueue.InvalidOptionError, match="unknown job option"):
        queue_notification("u1", "hi", colour="red")
    with pytest.raises(TypeError):
        queue_llm_request("gpt-4", 42)  # type: ignore[arg-type]
