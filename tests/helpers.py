"""Small helpers shared by the core tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (tests only; the library itself never polls)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)


def state_sets(r: Any, queue: str) -> dict[str, set[str]]:
    base = f"nbq:{{{queue}}}:"
    return {s: set(r.zrange(base + s, 0, -1))
            for s in ("wait", "active", "delayed", "completed", "failed")}


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """``wait_until`` with the argument names the scheduler and metrics tests use."""
    return wait_until(cond, timeout, message=what)
