"""Widget clicks while the kernel is busy.

A Jupyter kernel handles widget messages (button clicks are ``comm_msg`` requests on the
shell channel) one at a time with cell executions, so a click made while a cell runs waits
for the cell to end. nbqueue does two things about it, whichever the kernel allows:

- **ipykernel 7 with comm routing** (``BaseComm._reply_subshell_for``, 7.4+): the panel's comm
  is routed to a private *subshell* (JEP 91; a thread with its own shell loop). Its clicks
  are handled at once, whatever the main thread does: a cell blocked in ``job.result()``, a
  ``time.sleep`` or a training loop. :func:`route_to_subshell` sets this up.
- **cooperative processing** (ipykernel 6, as ``jupyter-ui-poll`` does): every nbqueue wait
  loop (``job.result()``, ``%%enqueue --wait``, ``JobBatch.wait()``) calls
  :func:`process_ui_events` between its Redis round trips (at least once a second); it
  takes the pending ``comm_msg`` requests of nbqueue panels off the kernel's shell queue and
  handles them, leaving every other request (other cells, other widgets) queued in order.

Either way :func:`kernel_state` tells the panel whether a click will run now
(``"concurrent"``, ``"idle"``, ``"waiting"`` in an nbqueue wait) or only when the running
cell ends (``"busy"``); the panel then shows the click as pending and lets the user cancel
it before it is sent, so no click fires silently minutes later.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .protocol import Op

log = logging.getLogger("nbqueue.notebook")
T = TypeVar("T")

__all__ = ["cooperative", "kernel_state", "process_ui_events", "route_to_subshell",
           "track_cells", "waiting"]

_lock = threading.Lock()
_waits = 0  # nbqueue wait loops now running in the main thread
_cell_running = False
_tracking = False
_panel_comms: set[str] = set()  # comm ids whose messages process_ui_events may take
_subshell_id: str | None = None
_subshell_failed = False
_listeners: list[Callable[[], None]] = []


def _kernel() -> Any:
    """The running ipykernel kernel, or None outside one (plain Python, terminal IPython)."""
    mod = sys.modules.get("ipykernel.kernelbase")
    if mod is None:
        return None
    try:
        if not mod.Kernel.initialized():
            return None
        return mod.Kernel.instance()
    except Exception:
        return None


# -- what the kernel is doing -----------------------------------------------------------------
def track_cells() -> None:
    """Follow cell execution (IPython's pre/post_run_cell events) so :func:`kernel_state`
    knows when a cell runs. Idempotent; a no-op outside IPython."""
    global _tracking
    if _tracking:
        return
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return

    def pre(*_a: Any) -> None:
        global _cell_running
        _cell_running = True
        _notify()

    def post(*_a: Any) -> None:
        global _cell_running
        _cell_running = False
        _notify()

    ip.events.register("pre_run_cell", pre)
    ip.events.register("post_run_cell", post)
    _tracking = True


def add_listener(fn: Callable[[], None]) -> None:
    """``fn()`` runs whenever the kernel state changes (a cell starts or ends, a wait
    starts or ends). Listeners must be quick and must not raise."""
    _listeners.append(fn)


def remove_listener(fn: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):
        _listeners.remove(fn)


def _notify() -> None:
    for fn in list(_listeners):
        with contextlib.suppress(Exception):
            fn()


def kernel_state() -> str:
    """``"concurrent"``: panel clicks run at once whatever the kernel does (subshell);
    ``"waiting"``: a cell waits in an nbqueue wait loop, clicks run within a second;
    ``"busy"``: a cell runs, clicks run when it ends; ``"idle"``."""
    if _subshell_id is not None:
        return "concurrent"
    if _waits > 0 and _cooperative_supported():
        return "waiting"
    return "busy" if _cell_running else "idle"


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """Mark the current thread's code as an nbqueue wait loop (see :func:`kernel_state`)."""
    global _waits
    main = threading.current_thread() is threading.main_thread()
    if main:
        with _lock:
            _waits += 1
        _notify()
    try:
        yield
    finally:
        if main:
            with _lock:
                _waits -= 1
            _notify()


# -- ipykernel 7: a subshell for the panels' comms ----------------------------------------------
def _ensure_subshell(kernel: Any) -> str | None:
    """Create (once per kernel process) a subshell to handle the panels' messages."""
    global _subshell_id, _subshell_failed
    if _subshell_id is not None or _subshell_failed:
        return _subshell_id
    thread = getattr(kernel, "shell_channel_thread", None)
    manager = getattr(thread, "manager", None)
    create = getattr(manager, "_create_subshell", None)
    io_loop = getattr(thread, "io_loop", None)
    if create is None or io_loop is None:
        _subshell_failed = True
        return None
    done = threading.Event()
    result: list[str] = []

    def make() -> None:  # runs in the shell channel thread, as the kernel requires
        try:
            result.append(create())
        except Exception as exc:  # pragma: no cover - depends on ipykernel internals
            log.debug("could not create a subshell: %s", exc)
        finally:
            done.set()

    io_loop.add_callback(make)
    if not done.wait(5) or not result:
        _subshell_failed = True
        return None
    _subshell_id = result[0]
    _quiet_subshell_status(kernel, f"subshell-{_subshell_id}")
    return _subshell_id


def _quiet_subshell_status(kernel: Any, thread_name: str) -> None:
    """Handling a panel click in the subshell would publish ``busy``/``idle`` on IOPub with
    the click as parent; frontends take any ``idle`` as the kernel's state, so the status bar
    would say "Idle" while a cell still runs. The subshell's clicks therefore publish no
    status (nothing waits for it: a comm message has no reply)."""
    publish = getattr(kernel, "_publish_status", None)
    if publish is None or getattr(publish, "_nbqueue_quiet", False):
        return

    def quiet(status: str, channel: str, parent: Any = None) -> None:
        if threading.current_thread().name == thread_name:
            return
        publish(status, channel, parent)

    quiet._nbqueue_quiet = True  # type: ignore[attr-defined]
    kernel._publish_status = quiet


def route_to_subshell(comm: Any) -> bool:
    """Handle the messages of ``comm`` (a widget's) in nbqueue's subshell thread, so they
    run while the main thread is busy. True if done; False where the kernel cannot (then
    the panel relies on :func:`process_ui_events` and shows pending clicks)."""
    if comm is None or not hasattr(comm, "_reply_subshell_for"):
        return False
    kernel = _kernel()
    if kernel is None or not getattr(kernel, "_supports_kernel_subshells", False):
        return False
    sid = _ensure_subshell(kernel)
    if sid is None:
        return False
    # The shell channel thread asks the comm where its messages go (ipykernel >= 7.4).
    comm._reply_subshell_for = lambda data, default: sid
    return True


def register_comm(comm_id: str) -> None:
    _panel_comms.add(comm_id)


def unregister_comm(comm_id: str) -> None:
    _panel_comms.discard(comm_id)


# -- ipykernel 6: cooperative processing ----------------------------------------------------------
def _cooperative_supported() -> bool:
    kernel = _kernel()
    if kernel is None or getattr(kernel, "shell_channel_thread", None) is not None:
        return False
    queue = getattr(kernel, "msg_queue", None)
    return (hasattr(getattr(queue, "_queue", None), "popleft")
            and getattr(kernel, "shell_stream", None) is not None
            and hasattr(kernel, "comm_manager"))


def process_ui_events() -> int:
    """Handle the pending clicks of nbqueue panels now; the number handled.

    Call it from a loop that blocks the main thread (nbqueue's wait loops do). Where the
    kernel routes panel messages to a subshell, or outside a kernel, it does nothing.
    Only ``comm_msg`` requests addressed to nbqueue panels are taken; every other request
    stays queued in its order."""
    if not _panel_comms or threading.current_thread() is not threading.main_thread():
        return 0
    if not _cooperative_supported():
        return 0
    kernel = _kernel()
    try:
        kernel.shell_stream.flush()  # socket -> kernel.msg_queue, without running anything
        pending = kernel.msg_queue._queue
        mine, keep = [], []
        session = kernel.session
        for item in list(pending):
            try:
                _t, _dispatch, args = item
                idents, frames = session.feed_identities(args[0], copy=False)
                msg = session.deserialize(frames, content=True, copy=False)
            except Exception:
                keep.append(item)
                continue
            if (msg["header"]["msg_type"] == "comm_msg"
                    and msg["content"].get("comm_id") in _panel_comms):
                mine.append((idents, msg))
            else:
                keep.append(item)
        if not mine:
            return 0
        pending.clear()
        pending.extend(keep)
        for idents, msg in mine:
            try:
                kernel.comm_manager.comm_msg(kernel.shell_stream, idents, msg)
            except Exception:
                log.exception("nbqueue panel message failed")
        return len(mine)
    except Exception:  # never break the wait loop that called us
        log.debug("process_ui_events failed", exc_info=True)
        return 0


def cooperative(op: Op[T]) -> Op[T]:
    """``op`` with :func:`process_ui_events` run before each of its Redis round trips, and
    the kernel marked as in an nbqueue wait meanwhile. Outside a kernel: ``op`` itself."""
    if _kernel() is None:
        return (yield from op)
    with waiting():
        try:
            step = next(op)
            while True:
                process_ui_events()
                reply = yield step
                step = op.send(reply)
        except StopIteration as stop:
            return stop.value
