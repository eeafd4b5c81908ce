"""What the panel's buttons do (``Dashboard.act``): queue actions, the drill-down (a list
of jobs, one job's detail) and job actions. Everything goes through the public API
(``Queue``, ``Job``), never Redis directly; each function returns what the panel shows
next. ``nbqueue.notebook.dashboard`` wires them to clicks. Architecture:
docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from ..display import fmt_duration, fmt_time, progress_percent

#: Actions that delete jobs: asked to confirm in the panel, refused unconfirmed.
DESTRUCTIVE = frozenset({"drain", "clean", "remove", "obliterate"})
DEAD_LETTER = "dead_letter"
LIST_LIMIT = 20


@dataclass
class ActionResult:
    """What an action did: ``ok``, the message shown, and the drill-down to show now
    (``detail``; None: the one shown stays)."""

    ok: bool
    text: str
    detail: dict[str, Any] | None = None


def perform(q: Any, action: str, job_id: Any, state: Any, manager: Any,
            detail: dict[str, Any]) -> ActionResult:
    """Run ``action`` on queue ``q`` (``detail``: the drill-down shown now)."""
    if action == "pause":
        q.pause()
        return ActionResult(True, f"paused {q.name}")
    if action == "resume":
        q.resume()
        return ActionResult(True, f"resumed {q.name}")
    if action == "retry":
        return ActionResult(True, f"{q.name}: {q.retry_failed()} failed job(s) moved back "
                                  "to wait")
    if action == "drain":
        return ActionResult(True, f"{q.name}: drained {q.drain()} waiting job(s)")
    if action == "clean":
        n = q.clean(0, 0, "completed") + q.clean(0, 0, "failed")
        return ActionResult(True, f"{q.name}: cleaned {n} finished job(s)")
    if action == "obliterate":
        n = q.obliterate()
        return ActionResult(True, f"{q.name}: obliterated ({n} key(s) removed)")
    if action == "list":
        return ActionResult(True, "", job_list(q, str(state or "failed"), manager))
    if action == "job":
        return ActionResult(True, "", job_view(q, str(job_id), detail))
    if action.startswith("job_"):
        return job_action(q, action[4:], str(job_id), detail)
    raise ValueError(f"unknown action {action!r}")


def job_action(q: Any, what: str, job_id: str, detail: dict[str, Any]) -> ActionResult:
    job = q.get_job(job_id)
    if job is None:
        return ActionResult(False, f"{q.name}:{job_id} no longer exists")
    if what == "retry":
        ok = job.retry()
        text = "moved back to wait" if ok else "was not failed; nothing to retry"
    elif what == "remove":
        ok = job.remove()
        text = "removed" if ok else "was already gone"
    elif what in ("cancel", "promote"):
        method = getattr(job, what, None)
        if method is None:
            return ActionResult(False, f"{what} is not available in this nbqueue version")
        result = method()
        ok = result is not False
        text = "cancelled" if what == "cancel" else "promoted to waiting"
    else:
        raise ValueError(f"unknown job action {what!r}")
    shown: dict[str, Any] | None = {**detail, "job": None}
    if what != "remove":
        shown = None
        with contextlib.suppress(Exception):
            shown = job_view(q, job_id, detail)
    return ActionResult(bool(ok), f"{q.name}:{job_id} {text}", shown)


def job_list(q: Any, state: str, manager: Any) -> dict[str, Any]:
    """The drill-down list of ``q``'s jobs in ``state`` (or its dead letters)."""
    if state == "dead_letter":
        jobs = dead_letters(q, manager)
    else:
        jobs = [job_row(j) for j in q.get_jobs(state, 0, LIST_LIMIT)]
    return {"queue": q.name, "state": state, "jobs": jobs, "job": None,
            "read": fmt_time(int(time.time() * 1000))}


def dead_letters(q: Any, manager: Any) -> list[dict[str, Any]]:
    """The latest dead-letter records of jobs of ``q`` (newest first)."""
    dl = manager.get_queue(DEAD_LETTER)
    out = []
    for j in dl.get_jobs(["waiting", "completed", "failed", "active", "delayed"], 0, 200):
        p = j.payload if isinstance(j.payload, dict) else {}
        if p.get("queue") != q.name:
            continue
        out.append({"id": str(p.get("job_id")), "name": str(p.get("name")),
                    "state": "dead letter", "progress": None,
                    "attempts": str(p.get("attempts_made", "")),
                    "created": fmt_time(p.get("failed_at")),
                    "duration": "", "summary": clip(str(p.get("reason", "")), 120),
                    "dead_letter_id": j.id})
    out.sort(key=lambda r: r["created"], reverse=True)
    return out[:LIST_LIMIT]


def job_view(q: Any, job_id: str, detail: dict[str, Any]) -> dict[str, Any]:
    """The drill-down with job ``job_id`` of ``q`` open (its detail, logs, what it can do)."""
    job = q.get_job(job_id)
    if job is None:
        return {**detail, "job": {"id": job_id, "missing": True}}
    info = job_detail(job)
    get_logs = getattr(job, "get_logs", None)
    if get_logs is not None:
        with contextlib.suppress(Exception):
            info["logs"] = [str(x) for x in get_logs()][-200:]
    info["can"] = {
        "retry": info["state"] == "failed",
        "remove": info["state"] != "active",
        "cancel": hasattr(job, "cancel") and info["state"] in (
            "waiting", "delayed", "active", "paused", "waiting-children"),
        "promote": hasattr(job, "promote") and info["state"] == "delayed",
    }
    return {**detail, "queue": q.name, "job": info}


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def job_row(job: Any) -> dict[str, Any]:
    state = job.state.value
    pct = progress_percent(job.progress, state)
    run = (job.finished_on - job.processed_on) if job.finished_on and job.processed_on else None
    if state == "completed":
        summary = clip(json.dumps(job.returnvalue, default=str), 120)
    else:
        summary = clip(job.failed_reason or "", 120)
    shown = pct == pct and (state == "active" or pct > 0)  # no "0%" on a failed job
    return {"id": job.id, "name": job.name, "state": state,
            "progress": round(pct) if shown else None,
            "attempts": f"{job.attempts_made}/{job.opts.get('attempts', 1)}",
            "created": fmt_time(job.timestamp), "duration": fmt_duration(run) if run else "",
            "summary": summary}


def job_detail(job: Any) -> dict[str, Any]:
    state = job.state.value
    pct = progress_percent(job.progress, state)
    created, started, finished = job.timestamp or None, job.processed_on, job.finished_on
    stack = getattr(job, "stacktrace", None) or []
    return {
        "id": job.id, "name": job.name, "state": state,
        "progress": None if pct != pct else round(pct), "raw_progress": job.progress,
        "attempts": f"{job.attempts_made}/{job.opts.get('attempts', 1)}",
        "priority": job.priority,
        "created": fmt_time(created), "started": fmt_time(started),
        "finished": fmt_time(finished),
        "waited": fmt_duration(started - created) if started and created else "-",
        "ran": fmt_duration(finished - started) if finished and started else "-",
        "data": json.dumps(job.data, indent=1, default=str)[:20_000],
        "result": (json.dumps(job.returnvalue, indent=1, default=str)[:20_000]
                   if state == "completed" else None),
        "error": job.failed_reason,
        "error_type": getattr(getattr(job, "_record", None), "error_type", None),
        "tracebacks": [str(s) for s in stack][-5:],
    }

