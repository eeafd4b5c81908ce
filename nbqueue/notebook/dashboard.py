"""``nbqueue.dashboard()``: a live ipywidgets panel, one row per queue.

Each row shows the queue's counts, a progress bar of its active jobs (their mean progress),
its throughput (jobs/s finished over the last refresh interval) and Pause / Resume /
Retry failed / Drain / Clean buttons. Buttons make one quick Redis call and return (click
handlers run only while the kernel is idle, so they never wait on workers).

Threading (see NOTES): the panel is built and displayed by the caller's (main) thread; a
daemon thread refreshes it every ``refresh`` seconds and only sets trait values. It stops
when the panel is closed (``panel.close()``) or garbage-collected.
"""

from __future__ import annotations

import contextlib
import html
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

import ipywidgets as widgets

from ..types import JobState, QueueMetrics

__all__ = ["Dashboard", "QueueRow"]

_STATES = ("waiting", "active", "delayed", "completed", "failed")
_COLORS = {"waiting": "#1f77b4", "active": "#ff7f0e", "delayed": "#9467bd",
           "completed": "#2ca02c", "failed": "#d62728"}


def _button(description: str, icon: str, tooltip: str, style: str = "") -> widgets.Button:
    return widgets.Button(description=description, icon=icon, tooltip=tooltip,
                          button_style=style, layout=widgets.Layout(width="auto"))


class QueueRow:
    """The widgets of one queue. ``metrics`` holds the last counts read from Redis."""

    def __init__(self, queue: Any, on_status: Any) -> None:
        self.queue = queue
        self._on_status = on_status
        self.metrics: QueueMetrics | None = None
        self.throughput: float = 0.0
        self._last_total: tuple[float, float] | None = None  # (monotonic s, finished count)
        self.title = widgets.HTML(f"<b>{html.escape(queue.name)}</b>",
                                  layout=widgets.Layout(width="160px"))
        self.counts = widgets.HTML(layout=widgets.Layout(width="380px"))
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=100.0,
                                              description="0 active", bar_style="info",
                                              style={"description_width": "70px"},
                                              layout=widgets.Layout(width="230px"))
        self.rate = widgets.Label("0.0 jobs/s", layout=widgets.Layout(width="90px"))
        self.pause_button = _button("Pause", "pause", "Pause the queue (workers stop taking jobs)")
        self.resume_button = _button("Resume", "play", "Resume the queue", "success")
        self.retry_button = _button("Retry failed", "redo", "Move all failed jobs back to wait",
                                    "warning")
        self.drain_button = _button("Drain", "trash", "Remove all waiting jobs", "danger")
        self.clean_button = _button("Clean", "broom",
                                    "Remove completed and failed jobs", "")
        self.pause_button.on_click(lambda _b: self._act("pause"))
        self.resume_button.on_click(lambda _b: self._act("resume"))
        self.retry_button.on_click(lambda _b: self._act("retry"))
        self.drain_button.on_click(lambda _b: self._act("drain"))
        self.clean_button.on_click(lambda _b: self._act("clean"))
        self.box = widgets.HBox([self.title, self.counts, self.progress, self.rate,
                                 self.pause_button, self.resume_button, self.retry_button,
                                 self.drain_button, self.clean_button],
                                layout=widgets.Layout(align_items="center"))

    @property
    def buttons(self) -> dict[str, widgets.Button]:
        return {"pause": self.pause_button, "resume": self.resume_button,
                "retry": self.retry_button, "drain": self.drain_button,
                "clean": self.clean_button}

    def _act(self, action: str) -> None:
        """A button's action: one Redis call, then refresh this row. Never waits on workers."""
        q = self.queue
        try:
            if action == "pause":
                q.pause()
                msg = f"paused {q.name}"
            elif action == "resume":
                q.resume()
                msg = f"resumed {q.name}"
            elif action == "retry":
                msg = f"{q.name}: {q.retry_failed()} failed job(s) moved back to wait"
            elif action == "drain":
                msg = f"{q.name}: drained {q.drain()} waiting job(s)"
            else:
                n = q.clean(0, 0, "completed") + q.clean(0, 0, "failed")
                msg = f"{q.name}: cleaned {n} finished job(s)"
            self.update()
        except Exception as exc:  # shown in the panel; a handler must not raise
            msg = f"{q.name}: {action} failed: {exc}"
        self._on_status(msg)

    def update(self) -> None:
        """Read counts, active progress and stats from Redis and set the widget values."""
        q = self.queue
        m: QueueMetrics = q.get_metrics()
        finished = 0.0
        try:
            stats = q.get_stats()
            finished = stats.get("completed", 0.0) + stats.get("failed", 0.0)
        except Exception:
            pass
        now = time.monotonic()
        if self._last_total is not None and now > self._last_total[0]:
            delta = max(0.0, finished - self._last_total[1])
            self.throughput = delta / (now - self._last_total[0])
        self._last_total = (now, finished)
        active = q.get_jobs(JobState.ACTIVE, 0, 50) if m.active else []
        values = [float(j.progress) for j in active
                  if isinstance(j.progress, (int, float)) and not isinstance(j.progress, bool)]
        self.metrics = m
        cells = " ".join(
            f"<span style='color:{_COLORS[s]}'>{s}&nbsp;<b>{getattr(m, s)}</b></span>"
            for s in _STATES)
        badge = (" <span style='background:#d62728;color:white;padding:0 4px;"
                 "border-radius:3px'>PAUSED</span>" if m.paused else "")
        self.counts.value = cells + badge
        self.progress.value = max(0.0, min(100.0, sum(values) / len(values))) if values else 0.0
        self.progress.description = f"{m.active} active"
        self.progress.bar_style = "warning" if m.paused else "info"
        self.rate.value = f"{self.throughput:.1f} jobs/s"
        self.pause_button.disabled = m.paused
        self.resume_button.disabled = not m.paused
        self.retry_button.disabled = m.failed == 0
        self.drain_button.disabled = m.waiting == 0

    def close(self) -> None:
        for w in self.box.children:
            w.close()
        self.box.close()


class Dashboard(widgets.VBox):
    """The panel ``nbqueue.dashboard()`` returns. ``rows`` maps queue name -> QueueRow."""

    def __init__(self, queues: Iterable[Any] | str | None = None,
                 refresh: float | None = 1.0, manager: Any = None, **kwargs: Any) -> None:
        if manager is None:
            from .. import queue_manager as manager
        self._manager = manager
        if isinstance(queues, str):
            queues = [queues]
        if queues is None:
            queues = sorted(manager.queues)
        resolved: list[Any] = [q if hasattr(q, "get_metrics") else manager.get_queue(str(q))
                               for q in queues]
        self.rows: dict[str, QueueRow] = {}
        self.status = widgets.HTML("", layout=widgets.Layout(min_height="1.5em"))
        self.workers = widgets.HTML("")
        for q in resolved:
            self.rows[q.name] = QueueRow(q, self._set_status)
        header = widgets.HTML("<b>nbqueue</b> &mdash; "
                              + (f"{len(self.rows)} queue(s)" if self.rows else
                                 "no queues yet: pass queues=[...] or create them first"))
        super().__init__([header, *(r.box for r in self.rows.values()), self.workers,
                          self.status], **kwargs)
        self.refresh_interval = refresh
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()
        if refresh:
            self._thread = threading.Thread(target=_refresh_loop,
                                            args=(weakref.ref(self), self._stop, float(refresh)),
                                            name="nbqueue-dashboard", daemon=True)
            self._thread.start()

    def _set_status(self, message: str) -> None:
        self.status.value = html.escape(message)

    def refresh(self) -> None:
        """Read every row's numbers from Redis now (the background thread calls this)."""
        with self._lock:
            error = None
            for row in self.rows.values():
                try:
                    row.update()
                except Exception as exc:  # Redis away: say so, keep the panel alive
                    error = f"{row.queue.name}: {exc}"
            workers = self._manager.workers
            self.workers.value = ("<small>workers: " + ", ".join(
                f"{html.escape(n)} ({w.mode} x{w.concurrency}, "
                f"{'running' if w.is_running else 'stopped'})" for n, w in sorted(workers.items()))
                + "</small>") if workers else "<small>workers: none started here</small>"
            if error != self.last_error:
                self.last_error = error
                if error:
                    self._set_status(f"refresh failed: {error}")

    @property
    def is_refreshing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop refreshing; the panel stays displayed with its last values."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)

    def close(self) -> None:
        """Stop the refresh thread and close the widgets."""
        self.stop()
        for row in self.rows.values():
            row.close()
        self.status.close()
        self.workers.close()
        super().close()


def _refresh_loop(ref: weakref.ref[Dashboard], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        panel = ref()
        if panel is None or panel.comm is None:  # gone, or closed
            return
        with contextlib.suppress(Exception):  # never let the thread die on a transient error
            panel.refresh()
        del panel
