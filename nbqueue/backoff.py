"""Retry delays: fixed, exponential (delay * 2^(retry-1)), optional jitter, or custom."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .durations import to_ms
from .errors import InvalidOptionError

# A custom strategy: (attempts_made, error, job) -> delay in ms (or None for "no delay").
BackoffStrategy = Callable[[int, BaseException, Any], "int | float | None"]

_REGISTRY: dict[str, BackoffStrategy] = {}


def register(fn: BackoffStrategy, name: str | None = None) -> str:
    """Make a custom strategy findable by name by the workers of this process."""
    key = name or f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    _REGISTRY[key] = fn
    return key


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the next attempt. Stored in Redis as JSON (``to_json``)."""

    type: str = "fixed"
    delay: int = 0
    jitter: float = 0.0
    name: str | None = None  # for type == "custom"

    @classmethod
    def parse(cls, value: object) -> Backoff | None:
        if value is None:
            return None
        if isinstance(value, Backoff):
            return value
        if callable(value):
            return cls(type="custom", name=register(value))
        if isinstance(value, bool):
            raise InvalidOptionError("backoff must be a dict, a number of ms or a callable")
        if isinstance(value, (int, float, str)) or hasattr(value, "total_seconds"):
            return cls(type="fixed", delay=to_ms(value, "backoff delay"))
        if not isinstance(value, dict):
            raise InvalidOptionError(
                f"backoff must be a dict like {{'type': 'exponential', 'delay': 1000}}, "
                f"not {type(value).__name__}")
        unknown = set(value) - {"type", "delay", "jitter", "name"}
        if unknown:
            raise InvalidOptionError(f"unknown backoff option(s): {', '.join(sorted(unknown))}")
        kind = value.get("type", "fixed")
        if kind not in ("fixed", "exponential", "custom"):
            raise InvalidOptionError(
                f"backoff type must be 'fixed', 'exponential' or 'custom', not {kind!r}")
        jitter = value.get("jitter", 0.0)
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
            raise InvalidOptionError(f"backoff jitter must be a number in [0, 1]: {jitter!r}")
        return cls(type=kind, delay=to_ms(value.get("delay", 0), "backoff delay"),
                   jitter=float(jitter), name=value.get("name"))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "delay": self.delay}
        if self.jitter:
            d["jitter"] = self.jitter
        if self.name:
            d["name"] = self.name
        return d

    def compute(self, attempts_made: int, error: BaseException, job: Any,
                fallback: BackoffStrategy | None = None) -> int:
        """Delay in ms before retry number ``attempts_made`` (1 for the first retry)."""
        if self.type == "custom":
            fn = _REGISTRY.get(self.name or "") or fallback
            if fn is None:
                return self.delay
            ms = fn(attempts_made, error, job)
            return 0 if ms is None else to_ms(ms, "custom backoff delay")
        if self.type == "exponential":
            ms = self.delay * 2 ** max(0, attempts_made - 1)
        else:
            ms = self.delay
        if self.jitter:
            ms = ms * (1 - self.jitter * random.random())
        return int(ms)
