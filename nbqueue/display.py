"""Rich and plain-text displays of queues, jobs and batches (their ``_repr_html_`` and
``_repr_pretty_``), and the small formatters the dashboard shares with them.

Pure functions of values already read from Redis: nothing here reads Redis. ``Progress``
is the live display of ``JobBatch.wait`` (a notebook output updated in place, or a text
bar on a terminal). Progress is shown
in percent everywhere (``frames.progress_percent``); durations read as ``850 ms``,
``4.2 s``, ``3 min 5 s``, ``2 h 10 min``; times are UTC.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from .errors import InvalidOptionError

__all__ = ["Progress", "batch_html", "batch_text", "fmt_count", "fmt_duration", "fmt_time",
           "job_html", "job_text", "progress_percent", "queue_html", "queue_text"]

STATE_COLORS = {"waiting": "#1f6fb2", "active": "#c25e00", "delayed": "#7b4fa8",
                "completed": "#1e7b34", "failed": "#c62828", "paused": "#8a6d00",
                "waiting-children": "#5d6b7a", "unknown": "#666666"}
_E = html.escape


def progress_percent(value: Any, state: Any = None) -> float:
    """A job's progress in percent (0-100, clipped), the one unit nbqueue shows everywhere:
    a number reported with ``update_progress``, or a dict's ``"percent"``; 100 for a
    completed job; NaN when the job reported something else (a str, a list...)."""
    if state == "completed" or getattr(state, "value", None) == "completed":
        return 100.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        pct = value.get("percent") if isinstance(value, dict) else None
        if isinstance(pct, (int, float)) and not isinstance(pct, bool):
            value = pct
        else:
            return float("nan")
    return max(0.0, min(100.0, float(value)))


def fmt_duration(ms: float | None) -> str:
    """``850 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``; ``-`` for None."""
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "-"
    ms = max(0.0, float(ms))
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m} min {s} s" if s else f"{m} min"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def fmt_time(ms: int | None) -> str:
    """An epoch-ms time as ``2026-12-01 04:31:07 UTC``; ``-`` for None/0."""
    if not ms:
        return "-"
    t = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_count(n: int) -> str:
    """Counts that stay narrow: 999, 1.2k, 45k, 1.3M."""
    if n < 1000:
        return str(n)
    if n < 10_000:
        return f"{n / 1000:.1f}k"
    if n < 1_000_000:
        return f"{n // 1000}k"
    return f"{n / 1_000_000:.1f}M"


def _short_json(value: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _badge(state: str) -> str:
    color = STATE_COLORS.get(state, "#666666")
    return (f"<span style='background:{color};color:#fff;border-radius:3px;"
            f"padding:0 5px;font-size:90%'>{_E(state)}</span>")


def _bar(pct: float, label: str, color: str = "#1f6fb2", width: int = 160) -> str:
    pct = 0.0 if math.isnan(pct) else max(0.0, min(100.0, pct))
    return (f"<span style='display:inline-flex;align-items:center;gap:6px'>"
            f"<span role='progressbar' aria-valuenow='{pct:.0f}' aria-valuemin='0' "
            f"aria-valuemax='100' style='display:inline-block;width:{width}px;height:8px;"
            f"background:#e3e6ea;border-radius:4px;overflow:hidden'>"
            f"<span style='display:block;height:100%;width:{pct:.1f}%;background:{color}'>"
            f"</span></span><span>{_E(label)}</span></span>")


def _job_fields(job: Any) -> dict[str, Any]:
    """What the job displays show, read from a job handle's last known record."""
    state = getattr(job.state, "value", str(job.state))
    pct = progress_percent(job.progress, state)
    created, started, finished = job.timestamp or None, job.processed_on, job.finished_on
    stack = getattr(job, "stacktrace", None) or []
    attempts = getattr(job, "opts", {}).get("attempts", 1)
    return {
        "queue": job.queue_name, "id": job.id, "name": job.name, "state": state,
        "progress": pct, "raw_progress": job.progress,
        "attempts": f"{job.attempts_made}/{attempts}",
        "created": created, "started": started, "finished": finished,
        "wait": (started - created) if started and created else None,
        "run": (finished - started) if finished and started else None,
        "result": job.returnvalue, "error": job.failed_reason,
        "error_type": getattr(job, "error_type", None) or getattr(
            getattr(job, "_record", None), "error_type", None),
        "traceback": stack[-1] if stack else None,
    }


def _progress_label(f: Mapping[str, Any]) -> str:
    pct, raw = f["progress"], f["raw_progress"]
    if math.isnan(pct):
        return f"progress {_short_json(raw, 60)}"
    return f"{pct:.0f}%"


def job_html(job: Any) -> str:
    """A job card: state, labelled progress, result or error (with the last traceback),
    attempts and times."""
    f = _job_fields(job)
    rows = [("job", f"{f['queue']}:{f['id']} ({f['name']})"),
            ("attempts", f["attempts"]),
            ("created", fmt_time(f["created"]))]
    if f["started"]:
        rows.append(("started", f"{fmt_time(f['started'])} (waited {fmt_duration(f['wait'])})"))
    if f["finished"]:
        rows.append(("finished", f"{fmt_time(f['finished'])} (ran {fmt_duration(f['run'])})"))
    cells = "".join(f"<tr><th style='text-align:left;padding-right:8px;font-weight:600'>"
                    f"{_E(k)}</th><td style='text-align:left'>{_E(str(v))}</td></tr>"
                    for k, v in rows)
    color = STATE_COLORS.get(f["state"], "#1f6fb2")
    head = (f"<div>{_badge(f['state'])} "
            f"{_bar(f['progress'], _progress_label(f), color)}</div>")
    tail = ""
    if f["state"] == "completed":
        tail = (f"<div><b>result</b> <code style='white-space:pre-wrap'>"
                f"{_E(_short_json(f['result']))}</code></div>")
    elif f["error"]:
        etype = f" ({_E(f['error_type'])})" if f["error_type"] else ""
        tail = (f"<div style='color:#c62828'><b>error{etype}</b> "
                f"<span style='white-space:pre-wrap'>{_E(f['error'])}</span></div>")
        if f["traceback"]:
            tail += ("<details><summary>traceback</summary><pre style='font-size:85%;"
                     f"white-space:pre-wrap'>{_E(f['traceback'])}</pre></details>")
    return (f"<div class='nbqueue-job'>{head}<table style='margin:4px 0'>{cells}</table>"
            f"{tail}</div>")


def job_text(job: Any) -> str:
    """The plain-text form of :func:`job_html` (terminals)."""
    f = _job_fields(job)
    lines = [f"Job {f['queue']}:{f['id']} ({f['name']}) {f['state']}, {_progress_label(f)}, "
             f"attempts {f['attempts']}",
             f"  created {fmt_time(f['created'])}"]
    if f["started"]:
        lines.append(f"  started {fmt_time(f['started'])} (waited {fmt_duration(f['wait'])})")
    if f["finished"]:
        lines.append(f"  finished {fmt_time(f['finished'])} (ran {fmt_duration(f['run'])})")
    if f["state"] == "completed":
        lines.append(f"  result {_short_json(f['result'])}")
    elif f["error"]:
        etype = f" ({f['error_type']})" if f["error_type"] else ""
        lines.append(f"  error{etype}: {f['error']}")
    return "\n".join(lines)


_COUNT_STATES = ("waiting", "active", "delayed", "completed", "failed")


def _worker_line(w: Any) -> str:
    """One worker as text: a local ``Worker`` or a registry ``WorkerInfo``."""
    if hasattr(w, "is_running"):
        state = "running" if w.is_running else "stopped"
        return f"{w.mode} x{w.concurrency} ({state}, this kernel)"
    host = getattr(w, "host", "?")
    pid = getattr(w, "pid", "?")
    active = getattr(w, "active", None)
    act = f", {active} active" if active is not None else ""
    return f"{getattr(w, 'mode', '?')} x{getattr(w, 'concurrency', '?')} on {host} pid {pid}{act}"


def queue_html(metrics: Any, workers: Sequence[Any] = ()) -> str:
    """A queue card: counts by state, paused, workers."""
    m = metrics
    counts = " ".join(
        f"<span style='color:{STATE_COLORS[s]};margin-right:10px;white-space:nowrap'>{s} "
        f"<b>{getattr(m, s)}</b></span>" for s in _COUNT_STATES)
    paused = f" {_badge('paused')}" if m.paused else ""
    ws = ("<br>".join(_E(_worker_line(w)) for w in workers) if workers
          else "no running worker known")
    return (f"<div class='nbqueue-queue'><b>{_E(m.queue_name)}</b>{paused}"
            f"<div>{counts}</div><div style='font-size:90%;color:#555'>workers: {ws}</div>"
            f"</div>")


def queue_text(metrics: Any, workers: Sequence[Any] = ()) -> str:
    m = metrics
    counts = ", ".join(f"{s} {getattr(m, s)}" for s in _COUNT_STATES)
    paused = " [paused]" if m.paused else ""
    ws = "; ".join(_worker_line(w) for w in workers) if workers else "none known"
    return f"Queue {m.queue_name!r}{paused}: {counts}\n  workers: {ws}"


def batch_html(total: int, done: int, failed: int, states: Mapping[str, int] | None = None,
               rate: float | None = None, eta_s: float | None = None,
               queues: Iterable[str] = ()) -> str:
    """A batch's progress as a whole: done/total, failures, rate, ETA."""
    pct = 100.0 * done / total if total else 100.0
    label = f"{done}/{total} done" + (f", {failed} failed" if failed else "")
    extra = []
    if rate:
        extra.append(f"{rate:.1f} jobs/s")
    if eta_s is not None and done < total:
        extra.append(f"ETA {fmt_duration(eta_s * 1000)}")
    if states:
        extra.append(", ".join(f"{k} {v}" for k, v in states.items() if v))
    names = ", ".join(sorted(set(queues)))
    head = f"{total} job(s) added" + (f" to <b>{_E(names)}</b>" if names else "")
    color = "#c62828" if failed else "#1e7b34"
    return (f"<div class='nbqueue-batch'>{head}<div>{_bar(pct, label, color, 220)}</div>"
            f"<div style='font-size:90%;color:#555'>{_E(' · '.join(extra))}</div></div>")


def batch_text(total: int, done: int, failed: int, rate: float | None = None,
               eta_s: float | None = None) -> str:
    parts = [f"JobBatch {done}/{total} done"]
    if failed:
        parts.append(f"{failed} failed")
    if rate:
        parts.append(f"{rate:.1f} jobs/s")
    if eta_s is not None and done < total:
        parts.append(f"ETA {fmt_duration(eta_s * 1000)}")
    return ", ".join(parts)


# -- the live progress of a JobBatch.wait ----------------------------------------------------
def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _fmt_eta(secs: float) -> str:
    total = round(secs)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Progress:
    """The live display of a ``wait``: done/total, failures, rate and ETA.

    ``mode``: ``"html"`` (a notebook output updated in place), ``"text"`` (a bar on
    ``stream``, redrawn with ``\\r``), or ``None`` (nothing). ``auto()`` picks html in a
    notebook kernel, text on a terminal, else nothing."""

    total: int
    mode: str | None
    stream: TextIO | None = None
    every: float = 0.2
    _handle: Any = None
    _last: float = -1.0
    _start: float = field(default_factory=time.monotonic)
    text: str = ""

    @staticmethod
    def pick(progress: bool | str | None) -> str | None:
        if progress is None or progress is False:
            return None
        if progress is True:
            if _in_notebook():
                return "html"
            return "text" if sys.stderr.isatty() else None
        if progress in ("html", "text"):
            return str(progress)
        raise InvalidOptionError(f"progress must be True, False, 'html' or 'text': "
                                 f"{progress!r}")

    def summary(self, done: int, failed: int) -> tuple[str, float, float | None]:
        elapsed = max(1e-9, time.monotonic() - self._start)
        rate = done / elapsed
        left = self.total - done
        eta = left / rate if rate > 0 else None
        parts = [f"{done}/{self.total} done", f"{failed} failed", f"{rate:,.1f} jobs/s"]
        parts.append("ETA " + (_fmt_eta(eta) if eta is not None else "?")
                     if left else f"in {elapsed:.1f}s")
        return ", ".join(parts), rate, eta

    def html(self, done: int, failed: int) -> str:
        text, _, _ = self.summary(done, failed)
        colour = "#c0392b" if failed else "#2e7d32"
        return (f"<div class='nbqueue-batch'><progress value='{done}' "
                f"max='{max(1, self.total)}' style='width:20em'></progress> "
                f"<span style='color:{colour}'>{html.escape(text)}</span></div>")

    def update(self, done: int, failed: int, final: bool = False) -> None:
        self.text = self.summary(done, failed)[0]
        if self.mode is None:
            return
        now = time.monotonic()
        if not final and now - self._last < self.every:
            return
        self._last = now
        if self.mode == "html":
            from IPython.display import HTML, display

            if self._handle is None:
                self._handle = display(HTML(self.html(done, failed)), display_id=True)
            else:
                self._handle.update(HTML(self.html(done, failed)))
            return
        stream = self.stream or sys.stderr
        width = 30
        filled = int(width * done / self.total) if self.total else width
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.text}")
        if final:
            stream.write("\n")
        stream.flush()
