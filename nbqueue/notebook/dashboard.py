"""``nbqueue.dashboard()``: the live panel of queues (an anywidget custom widget).

Why a custom widget (anywidget) rather than composed ipywidgets: the browser side must know
things the kernel cannot tell a stock ``Button`` — that a click would only run when the
running cell ends (then it shows the click as pending and lets the user cancel it before it
is sent), and it must lay out counts, a sparkline, icon buttons with tooltips, confirmations
and a drill-down in ~850 px (JupyterLab at 1366x768 with the file browser open). One model
holding one JSON snapshot also means one comm message per refresh instead of a dozen trait
updates per queue. anywidget is small, typed, and runs in JupyterLab, Notebook 7, VS Code
and Colab.

Threading and cost: the panel is displayed by the caller's (main) thread; one daemon thread
per panel refreshes it every ``refresh`` seconds, reading every queue shown in **one Redis
round trip** (``nbqueue.ops.panel.read_panel``: counts, paused flag, totals for the rate, the
minutes of history it lacks, the progress of the active jobs, the worker registry) and
setting one trait. It stops on ``stop()``,
``close()``, ``queue_manager.close()``, when the panel is garbage-collected, and when the
cell that displayed it is re-run (that closes the previous panel of the cell).

Clicks: see :mod:`nbqueue.kernel`. What a click does: ``panel_actions`` (through the
public API); the static text and HTML forms: ``panel_html``. Destructive actions (drain,
clean, remove, obliterate) are confirmed in the panel first; the kernel refuses them
unconfirmed too. Architecture: docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError

try:
    import anywidget
    import traitlets
except ModuleNotFoundError as _exc:  # the core install: pip install nbqueue (no [notebook])
    raise MissingDependencyError(str(_exc.name), "nbqueue.dashboard()") from _exc

from .. import kernel as _kernel
from ..display import fmt_time, progress_percent
from ..keys import QueueKeys
from ..ops.panel import PanelAsk, read_panel
from ..protocol import run_sync
from .panel_actions import DEAD_LETTER, DESTRUCTIVE, perform
from .panel_html import panel_text, snapshot_html

__all__ = ["RATE_WINDOW_S", "SPARK_MINUTES", "Dashboard"]

_STATIC = Path(__file__).with_name("static")
#: The window of the jobs/s rate (seconds): finished jobs over the last RATE_WINDOW_S.
RATE_WINDOW_S = 10.0
#: Minutes of completed/failed history in each row's chart.
SPARK_MINUTES = 30
#: Seconds between updates of the static snapshot output (while the panel changes).
SNAPSHOT_EVERY_S = 5.0

# Panels by the notebook cell that displayed them: re-running the cell closes the old one.
_by_cell: dict[str, weakref.ref[Dashboard]] = {}
_all_panels: weakref.WeakSet[Dashboard] = weakref.WeakSet()


def _current_cell_id() -> str | None:
    """The id of the notebook cell being executed (JupyterLab, Notebook 7 and nbclient send
    it in the request's metadata), or None."""
    k = _kernel._kernel()
    if k is None:
        return None
    try:
        parent = k.get_parent()
    except Exception:
        return None
    meta = (parent or {}).get("metadata") or {}
    cell = meta.get("cellId") or meta.get("cell_id")
    return str(cell) if cell else None


class _QueueState:
    """What the panel remembers of one queue between refreshes."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.samples: deque[tuple[float, float]] = deque()  # (monotonic s, finished total)
        self.minutes: dict[int, tuple[int, int]] = {}  # minute -> (completed, failed)
        self.active_ids: list[str] = []
        self.progress: dict[str, Any] = {}
        self.worker_ids: list[str] = []  # registered workers seen by the last refresh
        self.workers: dict[str, Any] = {}  # id -> WorkerInfo

    def rate(self, now: float, finished: float) -> float | None:
        """Finished jobs per second over the last RATE_WINDOW_S (None until 2 s of data)."""
        self.samples.append((now, finished))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        t0, f0 = self.samples[0]
        if now - t0 < 2.0:
            return None
        return max(0.0, finished - f0) / (now - t0)


class Dashboard(anywidget.AnyWidget):
    """The panel ``nbqueue.dashboard()`` returns; displays itself when it is a cell's value.

    ``queues``: names or Queue objects (default: the manager's queues, plus ``dead_letter``
    when it exists). ``refresh``: seconds between refreshes (None or 0: only ``refresh()``).
    """

    _esm = _STATIC / "dashboard.js"
    _css = _STATIC / "dashboard.css"

    # The panel's numbers as one JSON text: one comm message per refresh that ipywidgets
    # does not have to walk (a dict of 50 queues x 30 minutes of chart is ~30k nodes).
    state_json = traitlets.Unicode("{}").tag(sync=True)
    detail = traitlets.Dict().tag(sync=True)
    kernel = traitlets.Unicode("idle").tag(sync=True)
    live = traitlets.Bool(True).tag(sync=True)
    panel_id = traitlets.Unicode("").tag(sync=True)

    def __init__(self, queues: Iterable[Any] | str | None = None,
                 refresh: float | None = 1.0, manager: Any = None, **kwargs: Any) -> None:
        if manager is None:
            from .. import queue_manager as manager
        self._manager = manager
        if isinstance(queues, str) or hasattr(queues, "get_metrics"):
            queues = [queues]
        if queues is None:
            names = sorted(manager.queues)
            if names and DEAD_LETTER not in names and _has_jobs(manager, DEAD_LETTER):
                names.append(DEAD_LETTER)  # where this kernel's failed jobs end up
            queues = names
        resolved: list[Any] = [q if hasattr(q, "get_metrics") else manager.get_queue(str(q))
                               for q in queues]
        self._queues: dict[str, _QueueState] = {q.name: _QueueState(q) for q in resolved}
        self.refresh_interval = float(refresh) if refresh else None
        self.last_error: str | None = None
        self.round_trips = 0  # Redis round trips made by refreshes (for the cost figures)
        self.last_refresh_ms: float | None = None
        self.last_message: str = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._server_offset_ms = 0.0
        self._seen_workers: dict[str, Any] = {}
        self._data: dict[str, Any] = {}
        super().__init__(**kwargs)
        import uuid

        self.panel_id = uuid.uuid4().hex
        self.on_msg(self._on_frontend_msg)
        _kernel.track_cells()
        ref = weakref.ref(self)

        def listener() -> None:  # holds no strong reference to the panel
            panel = ref()
            if panel is not None:
                panel._kernel_changed()

        self._listener = listener
        _kernel.add_listener(listener)
        self.kernel = _kernel.kernel_state()
        self._routed = False
        self._take_over_cell()
        _all_panels.add(self)
        self.refresh()
        if self.refresh_interval:
            self._thread = threading.Thread(
                target=_refresh_loop, args=(weakref.ref(self), self._stop, self.refresh_interval),
                name="nbqueue-dashboard", daemon=True)
            self._thread.start()

    # -- lifecycle ----------------------------------------------------------------------------
    def _take_over_cell(self) -> None:
        cell = _current_cell_id()
        if cell is None:
            return
        old = _by_cell.get(cell)
        previous = old() if old is not None else None
        if previous is not None and previous is not self:
            previous.close()
        _by_cell[cell] = weakref.ref(self)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget (and a text form); see ``_ipython_display_`` for the snapshot."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if self.comm is not None:
            _kernel.register_comm(self.comm.comm_id)
            if not self._routed and os.environ.get("NBQUEUE_PANEL_SUBSHELL", "1") != "0":
                self._routed = _kernel.route_to_subshell(self.comm)
            self.kernel = _kernel.kernel_state()
        data: Any = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/plain"] = self.text()
        return bundle

    def _ipython_display_(self, **kwargs: Any) -> None:
        """Two outputs: the live widget, and a static HTML snapshot of the panel kept up to
        date (every SNAPSHOT_EVERY_S while it changes, and at ``stop()``). The snapshot is
        hidden while the live view shows; a notebook saved and reopened without its kernel
        (or rendered by nbviewer/GitHub) shows it with the last state instead of "model not
        found"."""
        from IPython.display import HTML, display

        bundle = self._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
        display(data, metadata=meta or None, raw=True)
        self._snapshot_html = self.snapshot_html()
        self._snapshot_at = time.monotonic()
        self._snapshot = display(HTML(self._snapshot_html), display_id=True)

    def _update_snapshot(self, force: bool = False) -> None:
        handle = getattr(self, "_snapshot", None)
        if handle is None:
            return
        if not force and time.monotonic() - self._snapshot_at < SNAPSHOT_EVERY_S:
            return
        html_now = self.snapshot_html()
        if html_now != self._snapshot_html:
            from IPython.display import HTML

            self._snapshot_html = html_now
            self._snapshot_at = time.monotonic()
            with contextlib.suppress(Exception):
                handle.update(HTML(html_now))

    @property
    def data(self) -> dict[str, Any]:
        """What the panel shows now: queues (counts, paused, progress, rate, spark),
        workers, refreshed (server time), message."""
        return self._data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data = value
        self.state_json = json.dumps(value, separators=(",", ":"), default=str)

    @property
    def queue_names(self) -> list[str]:
        return list(self._queues)

    @property
    def rows(self) -> dict[str, dict[str, Any]]:
        """The last numbers shown, by queue name: counts, paused, progress, rate, spark."""
        return {r["name"]: r for r in self.data.get("queues", [])}

    @property
    def is_refreshing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop refreshing; the panel stays with its last values (read once more now),
        marked as stopped."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        if not self._closed:
            if self.live:
                self.refresh()
            with contextlib.suppress(Exception):
                self.live = False
            self._update_snapshot(force=True)

    def close(self) -> None:
        """Stop refreshing and close the widget (nothing polls Redis afterwards)."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        _kernel.remove_listener(self._listener)
        if self.comm is not None:
            _kernel.unregister_comm(self.comm.comm_id)
        for cell, ref in list(_by_cell.items()):
            if ref() is self:
                del _by_cell[cell]
        super().close()

    def _kernel_changed(self) -> None:
        if not self._closed:
            self.kernel = _kernel.kernel_state()

    # -- reading Redis: one round trip for every queue shown ------------------------------------
    def _server_minute(self) -> int:
        return int((time.time() * 1000 + self._server_offset_ms) // 60_000)

    def refresh(self) -> None:
        """Read every queue's numbers from Redis (one round trip) and update the panel."""
        with self._lock:
            try:
                self._refresh()
                error = None
            except Exception as exc:  # Redis away: say so, keep the panel alive
                error = f"refresh failed: {exc}"
            if error != self.last_error:
                self.last_error = error
                if error:
                    self._message(error, ok=False)
            self.kernel = _kernel.kernel_state()
        self._update_snapshot()

    def _refresh(self) -> None:
        states = list(self._queues.values())
        minute = self._server_minute()
        asks = []
        for st in states:
            want = [m for m in range(minute - SPARK_MINUTES + 1, minute + 1)
                    if m not in st.minutes or m >= minute - 1]
            # the worker registry (every host): ids now, the hashes of the ids seen by the
            # previous refresh (a new worker shows one refresh later; still one round trip)
            asks.append((st.queue.ops, PanelAsk(want, list(st.active_ids),
                                                list(st.worker_ids))))
        client = states[0].queue.connection.sync() if states else None
        t0 = time.perf_counter()
        if client is not None:
            server_ms, reads = run_sync(client, read_panel(asks))
            self.round_trips += 1
        else:
            server_ms, reads = int(time.time() * 1000), []
        self.last_refresh_ms = (time.perf_counter() - t0) * 1000
        now = time.monotonic()
        self._server_offset_ms = server_ms - time.time() * 1000
        rows = []
        for st, read in zip(states, reads):
            st.minutes.update(read.minutes)
            st.progress.update(read.progress)
            st.active_ids = read.active_ids
            st.progress = {i: st.progress[i] for i in st.active_ids if i in st.progress}
            st.worker_ids = [w for w, expiry in read.registered if expiry >= server_ms]
            st.workers = {w: info for w, info in read.workers.items() if w in st.worker_ids}
            for m in [m for m in st.minutes if m <= minute - SPARK_MINUTES]:
                del st.minutes[m]
            pcts = [p for p in (progress_percent(_json(v)) for v in st.progress.values())
                    if p == p]
            rate = st.rate(now, read.finished)
            rows.append({
                "name": st.queue.name, "counts": read.counts, "paused": read.paused,
                "held": read.held,  # waiting-children: held until their dependencies end
                "progress": round(sum(pcts) / len(pcts), 1) if pcts else None,
                "rate": None if rate is None else round(rate, 2),
                "spark": [[*st.minutes.get(m, (0, 0))]
                          for m in range(minute - SPARK_MINUTES + 1, minute + 1)],
                "dead_letter": st.queue.name == DEAD_LETTER,
            })
        self.data = {"queues": rows, "workers": self._workers(),
                     "refreshed": fmt_time(server_ms), "server_ms": server_ms,
                     "interval": self.refresh_interval, "message": self.last_message,
                     "rate_window": RATE_WINDOW_S, "spark_minutes": SPARK_MINUTES}

    def _workers(self) -> list[dict[str, Any]]:
        """The registered workers of the queues shown (every host and process, from the
        worker registry) and this kernel's own workers: running, or stopped (a stopped
        worker leaves the registry; the panel still shows it, as stopped)."""
        out: list[dict[str, Any]] = []
        here, pid = socket.gethostname(), os.getpid()
        mine: set[tuple[str, str, int]] = set()
        for name, st in self._queues.items():
            for info in st.workers.values():
                local = info.host == here and info.pid == pid
                if local:
                    mine.add((name, info.mode, info.concurrency))
                out.append({"queue": name, "mode": info.mode, "concurrency": info.concurrency,
                            "state": "running", "active": info.active,
                            "host": "this kernel" if local else f"{info.host} pid {info.pid}"})
        # Workers this panel has seen stay listed (as stopped) after they stop, also when
        # the manager forgets them (stop_worker, queue_manager.close()).
        self._seen_workers.update(self._manager.workers)
        for name, w in sorted(self._seen_workers.items()):
            running = bool(w.is_running)
            if running and (name, w.mode, w.concurrency) in mine:
                continue  # already listed from the registry
            out.append({"queue": name, "mode": w.mode, "concurrency": w.concurrency,
                        "state": "running" if running else "stopped", "active": None,
                        "host": "this kernel"})
        return out

    # -- actions -------------------------------------------------------------------------------
    def _message(self, text: str, ok: bool = True) -> None:
        self.last_message = text
        data = dict(self.data)
        data["message"] = text
        data["message_ok"] = ok
        self.data = data

    def _on_frontend_msg(self, _widget: Any, content: Any, buffers: Any) -> None:
        if not isinstance(content, Mapping) or "action" not in content:
            return
        ok, text = self.act(str(content["action"]), content.get("queue"),
                            job_id=content.get("job"), state=content.get("state"),
                            confirmed=bool(content.get("confirmed")))
        with contextlib.suppress(Exception):
            self.send({"ack": content.get("id"), "ok": ok, "message": text})

    def _queue(self, name: Any) -> Any:
        if name not in self._queues:
            raise KeyError(f"queue {name!r} is not shown in this panel")
        return self._queues[name].queue

    def act(self, action: str, queue: Any = None, *, job_id: Any = None, state: Any = None,
            confirmed: bool = False) -> tuple[bool, str]:
        """Run a panel action (what a click sends); returns (ok, message shown).

        Queue actions: pause, resume, retry (failed jobs), drain, clean, obliterate.
        Drill-down: list (``state`` incl. ``dead_letter``), job (``job_id``'s detail),
        close_detail. Job actions: job_retry, job_remove, job_cancel, job_promote.
        Destructive ones need ``confirmed=True`` (the panel asks first)."""
        try:
            if (action in DESTRUCTIVE or action == "job_remove") and not confirmed:
                return False, f"{action.replace('job_', '')} needs a confirmation"
            ok, text = self._act(action, queue, job_id, state)
        except Exception as exc:  # shown in the panel; a handler must not raise
            ok, text = False, f"{queue}: {action} failed: {exc}"
        if action not in ("list", "job", "close_detail"):
            self._message(text, ok)
            with contextlib.suppress(Exception):
                self.refresh()
        return ok, text

    def _act(self, action: str, name: Any, job_id: Any, state: Any) -> tuple[bool, str]:
        if action == "close_detail":
            self.detail = {}
            return True, ""
        done = perform(self._queue(name), action, job_id, state, self._manager,
                       dict(self.detail))
        if done.detail is not None:
            self.detail = done.detail
        return done.ok, done.text

    # -- static forms ---------------------------------------------------------------------------
    def text(self) -> str:
        """The panel as plain text (terminals and text-only frontends)."""
        return panel_text(self.data)

    def snapshot_html(self) -> str:
        """The panel's last state as static HTML (what a saved notebook shows without its
        kernel, and what frontends without widget support show)."""
        return snapshot_html(self.data, self.panel_id, self.live)


def _has_jobs(manager: Any, name: str) -> bool:
    """Whether queue ``name`` has ever had a job (its id counter exists)."""
    try:
        keys = QueueKeys(name)
        client = manager.connection.sync()
        return bool(client.exists(keys.base + "ctr"))
    except Exception:
        return False


def _json(value: Any) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _refresh_loop(ref: weakref.ref[Dashboard], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        panel = ref()
        if panel is None or panel._closed or panel.comm is None:
            return
        with contextlib.suppress(Exception):  # never let the thread die on a transient error
            panel.refresh()
        del panel


def close_panels(manager: Any = None) -> int:
    """Close every panel (of ``manager`` if given); ``queue_manager.close()`` calls it."""
    n = 0
    for panel in list(_all_panels):
        if manager is None or panel._manager is manager:
            panel.close()
            n += 1
    return n
