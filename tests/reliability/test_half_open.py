"""Issue 21 item 6: half-open connections.

A TCP proxy of our own (threads, in this process) sits between a worker and Redis; at some
point it stops forwarding the connections it has -- no FIN, no RST, the sockets stay open,
like a NAT or firewall that dropped the flows -- while new connections go through. The
worker is parked (its BLPOP in flight) when that happens, and a producer (straight to Redis)
then adds a job, which Redis hands to the parked worker through the dead connection.

Before: the worker was deaf until the 30 s socket timeout, logged nothing about it, and the
job its dead BLPOP had popped waited for lock expiry + the stalled sweep (~48 s). Now the
parked call has a reply timeout (block time + ``protocol.BLOCK_REPLY_MARGIN_S``): the worker
notices within ~8 s, logs it, reconnects, and gives back the job locked by the lost reply
(``reclaim.lua``), which then runs at once.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time

import pytest
from redisproc import RedisProcess
from rhelpers import check_states, wait_until

from nbqueue import Queue, Worker, connect

pytestmark = pytest.mark.reliability


class StallingProxy:
    """Forwards 127.0.0.1:<port> to a Redis; ``stall()`` stops forwarding every connection
    open at that moment (sockets kept open: no FIN/RST); later connections work."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.stalled: set[int] = set()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            pair = (client, upstream)
            self.pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        a, b = pair
        while not self.closed:
            if id(pair) in self.stalled:
                time.sleep(0.05)  # read nothing, send nothing, close nothing
                continue
            try:
                ready, _, _ = select.select([a, b], [], [], 0.05)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        a.close()
                        b.close()
                        return
                    (b if s is a else a).sendall(data)
            except OSError:
                return

    def stall(self) -> None:
        self.stalled.update(id(p) for p in self.pairs)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for a, b in self.pairs:
            a.close()
            b.close()


def test_a_parked_worker_notices_a_dead_connection_and_its_job_runs_at_once(
        fresh_server: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    r = fresh_server.client()
    proxy = StallingProxy(fresh_server.port)
    caplog.set_level(logging.WARNING, logger="nbqueue")
    ran: list[str] = []
    worker = Worker("ho", lambda job: ran.append(job.id), connect(proxy.url))
    worker.start()
    try:
        assert wait_until(lambda: r.zcard("nbq:{ho}:idle") >= 1, 20)  # parked
        time.sleep(0.5)  # its block-and-fetch is in flight
        proxy.stall()
        stalled_at = time.monotonic()
        time.sleep(0.2)  # the pumps have seen it: nothing more goes through
        job = Queue("ho", connect(fresh_server.url)).add({"x": 1})
        # handed to the parked worker: locked for it, its reply lost in the proxy
        assert wait_until(lambda: r.zscore("nbq:{ho}:active", job.id) is not None, 5)
        # old code: ~48 s (30 s socket timeout, then lock expiry + the stalled sweep)
        assert wait_until(lambda: job.get_state() == "completed", 20), job.get_state()
        took = time.monotonic() - stalled_at
    finally:
        worker.stop()
        proxy.close()
    print(f"[half-open] stalled -> job completed in {took:.1f} s")
    assert took < 15, took
    assert ran == [job.id]
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "presumed dead" in text and "gave back 1 job" in text, text
    assert check_states(r, "ho") == []
