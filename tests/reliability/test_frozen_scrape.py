"""Issue 12 item 9: a Prometheus scrape of a frozen Redis (SIGSTOP) answers promptly with
``nbqueue_up 0`` instead of hanging as long as Redis does (the main clients wait 30 s per
read, with retries). "Promptly" is checked with a generous bound: the scrape must be over
while Redis is still frozen."""

from __future__ import annotations

import os
import signal
import threading
import urllib.request
from typing import Any

import pytest
from redisproc import RedisProcess

from nbqueue import Queue, connect
from nbqueue.metrics import QueueCollector, make_metrics_server

pytestmark = pytest.mark.reliability

FREEZE_S = 40.0  # longer than one read timeout of the main clients (30 s)


def _up(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("nbqueue_up "):
            return float(line.split()[1])
    raise AssertionError(f"no nbqueue_up in {text[:500]!r}")


def test_scrape_of_a_frozen_redis_answers_up_0_while_it_is_frozen(
        fresh_server: RedisProcess) -> None:
    conn = connect(fresh_server.url)
    Queue("scraped", conn).add({"type": "t"})
    server = make_metrics_server(0, queues=["scraped"], connection=conn)
    port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert _up(urllib.request.urlopen(url, timeout=30).read().decode()) == 1
        assert fresh_server.proc is not None
        pid = fresh_server.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            result: dict[str, Any] = {}

            def scrape() -> None:
                try:
                    result["text"] = urllib.request.urlopen(url, timeout=FREEZE_S).read()
                except Exception as exc:
                    result["error"] = exc

            t = threading.Thread(target=scrape, daemon=True)
            t.start()
            t.join(FREEZE_S - 10)  # generous, and still while Redis is frozen
            assert not t.is_alive(), "the scrape hung as long as Redis was frozen"
            assert "error" not in result, result
            assert _up(result["text"].decode()) == 0
        finally:
            os.kill(pid, signal.SIGCONT)
        assert _up(urllib.request.urlopen(url, timeout=30).read().decode()) == 1
    finally:
        server.shutdown()
        server.server_close()
        conn.close()


def test_collector_recovers_after_a_freeze(fresh_server: RedisProcess) -> None:
    conn = connect(fresh_server.url)
    collector = QueueCollector(conn, ["c"])
    fams = {f.name: f for f in collector.collect()}
    assert fams["nbqueue_up"].samples[0].value == 1
    assert fresh_server.proc is not None
    os.kill(fresh_server.proc.pid, signal.SIGSTOP)
    try:
        fams = {f.name: f for f in collector.collect()}
        assert fams["nbqueue_up"].samples[0].value == 0
    finally:
        os.kill(fresh_server.proc.pid, signal.SIGCONT)
    fams = {f.name: f for f in collector.collect()}
    assert fams["nbqueue_up"].samples[0].value == 1
    conn.close()
