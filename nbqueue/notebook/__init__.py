"""The Jupyter layer: ``%load_ext nbqueue`` magics and the ``dashboard()`` widget panel."""

from __future__ import annotations

from typing import Any

__all__ = ["dashboard", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%enqueue`` and ``%nbqueue`` (called by ``%load_ext nbqueue``)."""
    from .magics import NbqueueMagics

    ipython.register_magics(NbqueueMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Nothing to undo beyond what IPython does; kept for ``%unload_ext``."""


def dashboard(queues: Any = None, refresh: float | None = 1.0, **kwargs: Any) -> Any:
    """A live ipywidgets panel of ``queues`` (see :class:`nbqueue.notebook.dashboard.Dashboard`)."""
    from .dashboard import Dashboard

    return Dashboard(queues, refresh=refresh, **kwargs)
