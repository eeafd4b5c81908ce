"""The Jupyter layer: ``%load_ext nbqueue`` magics (``magics``) and the widget panel
(``dashboard.Dashboard``, built by ``nbqueue.dashboard()``)."""

from __future__ import annotations

from typing import Any

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%enqueue`` and ``%nbqueue`` (called by ``%load_ext nbqueue``)."""
    from .magics import NbqueueMagics

    ipython.register_magics(NbqueueMagics)


def unload_ipython_extension(ipython: Any) -> None:
    """Nothing to undo beyond what IPython does; kept for ``%unload_ext``."""

