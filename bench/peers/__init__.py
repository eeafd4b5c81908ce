"""One adapter module per peer system; each imports its library lazily so a missing peer
is reported as skipped instead of breaking the harness."""

from __future__ import annotations

import importlib.metadata


def dist_version(dist: str) -> str | None:
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return None


def missing(module: str, dist: str) -> str | None:
    try:
        importlib.import_module(module)
    except ImportError as e:
        return f"{dist} not installed ({e}); pip install -e '.[bench]'"
    return None
