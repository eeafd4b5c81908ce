"""Issue 12 item 10: the embedded server killed under a running worker and producer.

Policy (README "Reliability", nbqueue.server): a connection to the embedded server restarts
it when it finds it dead and sends the failed call again, so producers and workers carry on
by themselves; a server stopped on purpose (``nbqueue server stop``) stays stopped.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rhelpers import wait_until

import nbqueue
from nbqueue import Queue, Worker, connect, server

pytestmark = pytest.mark.reliability


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "h"
    monkeypatch.delenv("NBQUEUE_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("NBQUEUE_HOME", str(home))
    try:
        yield home
    finally:
        monkeypatch.setenv("NBQUEUE_HOME", str(home))
        server.stop()


def _kill_server() -> int:
    pid = server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not server.status().running, 10)
    return pid


def test_killed_embedded_server_is_restarted_by_its_clients(embedded_home: Path) -> None:
    conn = connect()
    q = Queue("emb", conn)
    seen: list[str] = []
    with Worker("emb", lambda job: seen.append(job.id) or job.id, conn, concurrency=2):
        first = q.add({"type": "t"})
        assert first.result(timeout=30) == first.id
        time.sleep(1.2)  # the AOF (appendfsync everysec) has the job by now
        old_pid = _kill_server()
        # the producer's next add finds the server dead: restarted, the add sent again
        second = q.add({"type": "t"})
        new_pid = server.status().pid
        assert new_pid is not None and new_pid != old_pid
        # and the worker, blocked on the old server, carries on by itself
        assert second.result(timeout=60) == second.id
    assert q.get_job(first.id) is not None  # what was acknowledged before the kill survived
    assert seen.count(second.id) == 1
    conn.close()


def test_a_server_stopped_on_purpose_stays_stopped(embedded_home: Path) -> None:
    conn = connect()
    q = Queue("emb-stop", conn)
    q.add({"type": "t"})
    assert server.stop() is True
    with pytest.raises(nbqueue.RedisUnavailableError):
        q.add({"type": "t"})
    assert not server.status().running
    # an explicit connect() starts it again (and the job is still there, from the AOF)
    conn2 = connect()
    assert Queue("emb-stop", conn2).get_metrics().waiting == 1
    assert q.add({"type": "t"}).id == "2"  # and the first connection works again
    conn.close()
    conn2.close()


def test_an_explicit_embedded_url_is_revived_too(embedded_home: Path) -> None:
    url = server.ensure_server()
    conn = connect(url)  # e.g. a process-mode child or a CLI worker given the socket URL
    assert conn.embedded_home == embedded_home
    _kill_server()
    assert Queue("emb-url", conn).add({"type": "t"}).id == "1"
    assert server.status().running
    conn.close()


def test_a_frozen_embedded_server_is_not_doubled(embedded_home: Path) -> None:
    """Alive but not answering (SIGSTOP): no second server on the same socket and AOF."""
    conn = connect()
    q = Queue("emb-frozen", conn)
    q.add({"type": "t"})
    pid = server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        assert server.revive(embedded_home) is False
        with pytest.raises(nbqueue.NoServerError, match="not starting a second one"):
            server.ensure_server()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert server.status().pid == pid
    assert q.get_metrics().waiting == 1
    conn.close()
