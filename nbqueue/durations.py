"""Durations: numbers are milliseconds (as in BullMQ); timedelta and "30s"/"5m"/"2h" work too."""

from __future__ import annotations

import re
from datetime import timedelta

from .errors import InvalidOptionError

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")

Duration = int | float | timedelta | str


def to_ms(value: object, what: str = "duration", *, allow_zero: bool = True) -> int:
    """Milliseconds from a number (ms), a ``timedelta`` or a string like ``"5m"``."""
    if isinstance(value, bool):
        raise InvalidOptionError(f"{what} must be a duration, not a bool")
    if isinstance(value, timedelta):
        ms = value.total_seconds() * 1000
    elif isinstance(value, (int, float)):
        ms = float(value)
    elif isinstance(value, str):
        m = _PATTERN.match(value)
        if not m:
            raise InvalidOptionError(
                f"{what} {value!r} is not a duration; use milliseconds or e.g. '30s', '5m', '2h'")
        ms = float(m.group(1)) * _UNITS[m.group(2) or "ms"]
    else:
        raise InvalidOptionError(
            f"{what} must be milliseconds, a timedelta or a string like '5m', "
            f"not {type(value).__name__}")
    if ms != ms or ms in (float("inf"), float("-inf")):
        raise InvalidOptionError(f"{what} must be finite: {value!r}")
    if ms < 0:
        raise InvalidOptionError(f"{what} must not be negative: {value!r}")
    if not allow_zero and ms == 0:
        raise InvalidOptionError(f"{what} must be positive: {value!r}")
    return round(ms)
