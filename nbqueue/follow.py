"""Following a queue's event stream to learn which jobs ended (sans-I/O, see ``protocol``).

What ``Job.result()`` and ``JobBatch`` wait with. One step is one round trip: a blocking
``XREAD`` from the last id seen, and in the same write an ``XRANGE - + COUNT 1`` that tells
whether the stream (capped at ``events_maxlen`` entries) was trimmed past that id while
nobody read it. Only then, or when a ``drain`` removed waiting jobs without per-job events,
must a waiter look at its unfinished jobs one by one (``StreamStep.lost``); otherwise every
end is in the stream.

The ``completed`` entry a worker's finish writes carries the return values of small results
(field ``rv``, see ``scripts/finish.lua``), so a waiter reads no job hash for them: a
completed job whose value is not in its entry, and every failed job, is read once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .protocol import Batch, Call, Op
from .records import Event, parse_events, stream_entries

#: Events that end a job for a waiter (``failed`` of a job retried later is re-checked).
END_EVENTS = frozenset(("completed", "failed", "removed", "cancelled"))


def stream_id(text: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``: stream ids compare as such pairs."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def earliest(ids: Iterable[str]) -> str:
    return min(ids, key=stream_id)


@dataclass
class StreamStep:
    """What one step read: the new last id, the events, whether some may be lost, and the
    return values carried by ``completed`` entries (job id -> value)."""

    last: str
    events: list[Event]
    lost: bool
    values: dict[str, Any] = field(default_factory=dict)


def read_step(events_key: str, last: str, block_ms: int, count: int) -> Op[StreamStep]:
    """One round trip: the events after ``last`` (blocking up to ``block_ms`` when there
    are none yet), then the stream's first entry, to see whether it was trimmed past
    ``last`` (trimming only ever drops the oldest entries: if the first entry still is at
    or before ``last`` after the read, the read missed nothing)."""
    read, first = yield Batch([
        Call.cmd("XREAD", "COUNT", count, "BLOCK", max(1, block_ms), "STREAMS", events_key,
                 last),
        Call.cmd("XRANGE", events_key, "-", "+", "COUNT", 1)])
    entries = stream_entries(read)
    # "0-0": the stream had no entry when the wait began; it could have lost some only by
    # growing past its cap within one step. No stream now: deleted (obliterate).
    lost = (stream_id(first[0][0]) > stream_id(last) and last != "0-0") if first \
        else last != "0-0"
    events = parse_events(entries) if entries else []
    step = StreamStep(entries[-1][0] if entries else last, events, lost)
    parsed: set[str] = set()
    for e in events:
        if (e.event == "drained" and e.fields.get("removed", "0") != "0") or (
                e.event == "cleaned" and e.fields.get("count", "0") != "0"
                and e.fields.get("state") not in ("completed", "failed")):
            step.lost = True  # unfinished jobs removed in bulk: no per-job event says so
        elif e.event == "completed" and "rv" in e.fields and e.id not in parsed:
            parsed.add(e.id)
            try:
                values = json.loads(e.fields["rv"])
            except ValueError:
                continue
            if isinstance(values, dict):
                step.values.update(values)
    return step
