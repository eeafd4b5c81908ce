"""Plain-text tables for terminals (the CLI and the demo)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

METRIC_COLUMNS = ("queue_name", "waiting", "active", "delayed", "completed", "failed",
                  "paused", "total")
WORKER_COLUMNS = ("queue", "id", "host", "pid", "mode", "concurrency", "active", "started",
                  "heartbeat")


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as left-aligned columns under a header and a rule."""
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c)
              for c in columns}
    line = "  ".join(c.ljust(widths[c]) for c in columns)
    out = [line, "  ".join("-" * widths[c] for c in columns)]
    for r in rows:
        out.append("  ".join(str(r[c]).ljust(widths[c]) for c in columns))
    return "\n".join(out)
