"""The work of ``python -m bench.fanout``: the functions every system runs.

Imported by pool workers and nbqueue's process-mode children, so it imports nothing heavy at
module level (pandas is imported inside the W2 functions)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

W1_US = 20.0  # W1: microseconds of CPU per call
W3_MS = 50.0  # W3: milliseconds of CPU per task


def spin(seconds: float) -> None:
    """Busy the CPU for ``seconds`` (a stand-in for real work that needs a core)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def w1_item(x: int) -> int:
    """W1: one ~20 µs call."""
    spin(W1_US / 1e6)
    return (x * x + 7 * x + 3) % 1_000_003


def w1_chunk(xs: Iterable[int]) -> list[int]:
    return [w1_item(x) for x in xs]


def w3_task(i: int) -> int:
    """W3: one ~50 ms task."""
    spin(W3_MS / 1e3)
    return i * i


def w3_combine(values: Iterable[int]) -> int:
    return sum(values)


def w4_echo(x: int) -> int:
    """W4: nothing to do; the round trip is the cost."""
    return x + 1


# -- W2: pandas over row chunks ------------------------------------------------------------
def w2_source(rows: int, seed: int = 7) -> Any:
    """The input frame of W2 (same in every system: a fixed seed)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "key": rng.integers(0, 50, rows),
        "x": rng.normal(size=rows),
        "y": rng.uniform(0, 100, rows),
        "city": rng.choice(["paris", "lyon", "nice", "lille", "brest"], rows),
    })


def _score(x: float, y: float, key: int) -> float:
    """Per-row Python (the part of real chunk code that is not vectorised)."""
    v = 0.0
    for k in range(1):
        v += math.tanh(x * (k + 1) / 7.0) * (y / 100.0) + (key % (k + 2)) * 1e-3
    return v


def w2_work(df: Any) -> Any:
    """~5 ms of pandas per 1,000 rows (linear in rows): derived columns of each row."""
    import pandas as pd

    out = pd.DataFrame({"key": df["key"].to_numpy()})
    x = df["x"].reset_index(drop=True)
    y = df["y"].reset_index(drop=True)
    out["z"] = (x - x.mean()) / x.std()
    out["trend"] = x.rolling(16, min_periods=1).mean()
    out["rank"] = y.rank(pct=True)
    out["score"] = [_score(a, b, k) for a, b, k in zip(x.to_numpy(), y.to_numpy(),
                                                         out["key"].to_numpy())]
    out["city"] = df["city"].str.upper().str.slice(0, 3).to_numpy()
    return out


def w2_check(frame: Any) -> list[float]:
    """A checksum of a gathered W2 result (equal across systems)."""
    # (+ 0.0: a sum that rounds to -0.0 is 0.0)
    return [float(len(frame)), round(float(frame["z"].sum()), 6) + 0.0,
            round(float(frame["trend"].sum()), 6),
            round(float(frame["score"].sum()), 6), round(float(frame["rank"].sum()), 6)]


# -- the nbqueue processor (process mode and thread mode) ----------------------------------
def nbq_process(job: Any) -> Any:
    """One processor for every workload, by job type."""
    name = job.name
    if name == "w1":
        return w1_item(job.payload["x"])
    if name == "chunk":  # Queue.map(items, chunksize=N)
        return [w1_item(d["payload"]["x"]) for d in job.payload["items"]]
    if name == "w2r" or name == "w2f":
        from nbqueue import chunk_frame

        out = w2_work(chunk_frame(job))
        # w2f: the frame itself (trees whose processors may return frames: Arrow);
        # w2r: records (trees where a return value must be JSON)
        return out if name == "w2f" else out.to_dict("records")
    if name == "w3":
        return w3_task(job.payload["i"])
    if name == "w3c":
        return w3_combine(job.dependency_results().values())
    if name == "w4":
        return w4_echo(job.payload["x"])
    if name == "probe_frame":
        import pandas as pd

        return pd.DataFrame({"a": [1, 2]})
    raise ValueError(f"unknown job type {name!r}")
