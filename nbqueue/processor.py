"""What a processor is: the callable a worker runs for each job (sync or async)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

Processor = Callable[[Any], Any]


def is_async(fn: object) -> bool:
    """True for a coroutine function, or a callable object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(type(fn), "__call__", None))  # noqa: B004
