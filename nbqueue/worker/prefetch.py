"""How many jobs a worker holds beyond its slots: a fixed ``prefetch``, or ``"auto"``.

``"auto"`` (the default) hides the fetch round trip behind running jobs, and nothing more:
after a fetch that got every job it asked for (the queue has more), the worker holds
``floor(concurrency * round_trip / job_duration)`` extra jobs (moving averages), at most
``AUTO_CAP_PER_SLOT`` per slot. Jobs longer than a round trip get no prefetch at all, so
a job that could start elsewhere is never held back behind a long one; a fetch that comes
back short (the queue ran dry, or a global concurrency or rate limit held it back: so the
held jobs never keep another worker under a global limit for more than about one round
trip) and a start (no duration known yet) mean no prefetch. The
trade is that of any prefetch (a new higher-priority job waits behind the held ones), but
bounded: the held jobs together take about one round trip to run.
"""

from __future__ import annotations

import math
from typing import Literal

from ..errors import InvalidOptionError

AUTO_CAP_PER_SLOT = 8  # W1 (20 µs bodies, 2 children): 8 extra jobs 216 µs/job, 16 -> 191
AUTO_CAP = 256
_EWMA = 0.2  # weight of the newest sample in the moving averages

PrefetchArg = int | Literal["auto"]


def check_prefetch(prefetch: object) -> PrefetchArg:
    """``prefetch`` as given to ``Worker``: an int >= 0 or ``"auto"``."""
    if prefetch == "auto":
        return "auto"
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise InvalidOptionError(f"prefetch must be an int >= 0 or 'auto': {prefetch!r}")
    return prefetch


class Prefetch:
    """The number of extra jobs to hold now (``value``), kept up to date by the engine."""

    __slots__ = ("auto", "cap", "concurrency", "duration", "round_trip", "value")

    def __init__(self, prefetch: PrefetchArg, concurrency: int) -> None:
        self.auto = prefetch == "auto"
        self.concurrency = concurrency
        self.cap = min(AUTO_CAP, AUTO_CAP_PER_SLOT * concurrency)
        self.value = 0 if prefetch == "auto" else int(prefetch)
        self.duration = -1.0  # seconds a body takes (moving average; < 0: none seen yet)
        self.round_trip = -1.0  # seconds a finish/fetch call takes (moving average)

    def job_done(self, duration: float) -> None:
        d = self.duration
        self.duration = duration if d < 0 else d + _EWMA * (duration - d)

    def fetched(self, asked: int, got: int, seconds: float) -> None:
        """A fetch (alone or with a finish) asked for ``asked`` jobs and got ``got``."""
        if not self.auto or asked <= 0:
            return
        rt = self.round_trip
        self.round_trip = seconds if rt < 0 else rt + _EWMA * (seconds - rt)
        if got < asked or self.duration < 0:
            self.value = 0  # the queue ran dry (or nothing is known yet): hold nothing
        else:
            per = max(self.duration, 1e-6)
            self.value = min(self.cap, math.floor(self.concurrency * self.round_trip / per))
