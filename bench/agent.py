"""Subprocess entry point: run one role of one system and print its result as JSON.

``python -m bench.agent SYSTEM ROLE --n N [--mode M] [--budget S]``; the Redis URL comes
from ``BENCH_REDIS_URL``. Roles: ``info``, ``add_single``, ``add_async``, ``add_bulk``,
``preload``, ``worker`` (blocks until killed), ``latency``. The last stdout line that
starts with ``BENCHRESULT`` carries the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import traceback
from types import ModuleType
from typing import Any

from bench import jobs

PEERS = ("rq", "arq", "saq", "dramatiq", "huey", "bullmq")


def load(system: str) -> ModuleType:
    if system == "raw":
        return importlib.import_module("bench.raw")
    if system == "nbqueue":
        return importlib.import_module("bench.nbq")
    if system in PEERS:
        return importlib.import_module(f"bench.peers.{system}")
    raise SystemExit(f"unknown system {system!r}")


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write("BENCHRESULT " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.agent")
    p.add_argument("system")
    p.add_argument("role")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--mode", default="default")
    p.add_argument("--budget", type=float, default=20.0)
    a = p.parse_args(argv)
    try:
        mod = load(a.system)
        skip = mod.skip_reason(a.role)
        if a.role == "info":
            emit({"skip": skip, "version": mod.version(), "modes": list(mod.MODES),
                  "roles": sorted(mod.ROLES)})
            return 0
        if skip:
            emit({"skip": skip})
            return 0
        if a.role not in mod.ROLES:
            emit({"skip": f"{a.system} has no {a.role} API"})
            return 0
        url = jobs.url()
        if a.role == "add_single":
            emit({"seconds": mod.add_single(url, a.n)})
        elif a.role == "add_async":
            emit({"seconds": asyncio.run(mod.add_async(url, a.n))})
        elif a.role == "add_bulk":
            emit({"seconds": mod.add_bulk(url, a.n)})
        elif a.role == "preload":
            mod.preload(url, a.n)
            emit({"ok": True})
        elif a.role == "latency":
            emit({"samples": mod.latency(url, a.n, a.budget)})
        elif a.role == "worker":
            mod.worker(url, a.mode)
            emit({"ok": True})
        else:
            raise SystemExit(f"unknown role {a.role!r}")
    except Exception as e:  # report, don't hide: the harness prints it in the notes
        traceback.print_exc()
        emit({"error": f"{type(e).__name__}: {e}"[:300]})
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
