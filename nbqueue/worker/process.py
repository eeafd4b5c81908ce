"""Process mode: N child processes, each running its own engine.

The processor is pickled by value (cloudpickle) and handed to each child directly, never
through Redis. Children stop on SIGTERM/SIGINT like a foreground worker (graceful, within
the grace period).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any

from ..connection import Connection
from .engine import Engine


def child_main(payload: bytes) -> None:
    """Entry point of a process-mode child: unpickle the processor, run one engine."""
    import cloudpickle

    logging.basicConfig(level=os.environ.get("NBQUEUE_LOG_LEVEL", "WARNING"))
    spec = cloudpickle.loads(payload)
    conn = Connection(spec.pop("url"), cluster=spec.pop("cluster"))
    engine = Engine(spec.pop("queue_name"), spec.pop("processor"), conn, **spec)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, engine.request_stop)
        await engine.run()

    asyncio.run(main())


def start_children(specs: Sequence[dict[str, Any]], queue_name: str) -> list[Any]:
    """Start one child per engine spec (``Engine`` keyword arguments plus url, cluster,
    queue_name and processor); returns the processes."""
    import multiprocessing

    import cloudpickle

    ctx = multiprocessing.get_context("spawn")
    children = []
    for i, spec in enumerate(specs):
        payload = cloudpickle.dumps(spec)
        proc = ctx.Process(target=child_main, args=(payload,), daemon=True,
                           name=f"nbqueue-worker-{queue_name}-{i}")
        proc.start()
        children.append(proc)
    return children


def stop_children(children: Sequence[Any], wait: float) -> None:
    """SIGTERM every child (a graceful stop), wait up to ``wait`` s each, then kill."""
    for p in children:
        if p.is_alive() and p.pid:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in children:
        p.join(wait)
        if p.is_alive():
            p.kill()
            p.join(5)
