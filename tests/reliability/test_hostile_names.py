"""Issue 21 item 7: hostile queue names and command-line inputs.

A queue name holding a lone surrogate ('\\ud800', or an undecodable byte of a command line)
cannot be encoded for Redis: every entry point refuses it with a one-line error and writes
nothing. Each bad ``nbqueue`` CLI input gets one line on stderr (no traceback), exit code 1
and nothing left in Redis. ``%nbqueue drain`` of a never-seen queue writes no key;
``%nbqueue jobs q --limit -5`` is refused.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from IPython.core.error import UsageError
from IPython.core.getipython import get_ipython
from IPython.testing.globalipapp import start_ipython
from redisproc import RedisProcess
from rhelpers import REPO

import nbqueue
import nbqueue.aio
from nbqueue import InvalidOptionError, Queue, QueueManager, Worker, connect

pytestmark = pytest.mark.reliability

LONE = "jobs\ud800"


def _noop(job: Any) -> None:
    return None


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    with RedisProcess() as p:
        yield p


def test_lone_surrogate_queue_names_are_refused_everywhere(server: RedisProcess) -> None:
    r = server.client()
    conn = connect(server.url)
    entry_points = [
        lambda: Queue(LONE, conn),
        lambda: Queue(LONE, conn).add({"a": 1}),
        lambda: nbqueue.aio.Queue(LONE, conn),
        lambda: Worker(LONE, _noop, conn),
        lambda: nbqueue.aio.Worker(LONE, _noop, conn),
        lambda: QueueManager(connection=conn).get_queue(LONE),
        lambda: Queue("ok", conn).add({"a": 1}, depends_on=[(LONE, "1")]),
    ]
    for call in entry_points:
        with pytest.raises(InvalidOptionError) as info:
            call()
        message = str(info.value)
        assert "surrogate" in message and "\n" not in message, message
    assert r.keys("*") == []  # nothing written anywhere (not even the queue registry)


def _cli(url: str, *args: str | bytes, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), NBQUEUE_REDIS_URL=url)
    return subprocess.run([sys.executable, "-m", "nbqueue", "--url", url, *args], env=env,
                          cwd=str(REPO), capture_output=True, timeout=timeout)


def _busy_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, int(s.getsockname()[1])


def test_every_bad_cli_input_is_one_line_and_leaves_nothing(server: RedisProcess) -> None:
    r = server.client()
    held, port = _busy_port()
    cases: list[tuple[str | bytes, ...]] = [
        ("metrics", "--port", "99999"),
        ("metrics", "--port", "-1"),
        ("metrics", "--port", str(port)),  # in use
        ("metrics", "--host", "256.1.1.1", "--port", "0"),
        ("worker", "q", "--processor", "nonexistent_mod:fn"),
        ("worker", "q", "--processor", "os:nonexistent"),
        ("worker", "q", "--processor", "nofile.py:fn"),
        ("worker", "q", "--processor", ":"),
        ("worker", "q", "--processor", "os.path"),
        ("worker", "q", "--processor", "os:sep"),  # not callable
        ("worker", "q", "--processor", "os:getpid", "--grace", "-1"),
        ("worker", "q", "--processor", "os:getpid", "--grace", "nan"),
        ("worker", "q", "--processor", "os:getpid", "--grace", "inf"),
        ("worker", b"q\xff", "--processor", "os:getpid"),  # undecodable: a lone surrogate
        ("stats", b"q\xff"),
        ("metrics", "--port", "0", b"q\xff"),
        ("demo", "--jobs", "0"),
        ("demo", "--jobs", "-1"),
    ]
    try:
        for case in cases:
            res = _cli(server.url, *case)
            err = res.stderr.decode(errors="replace").strip()
            shown = " ".join(a if isinstance(a, str) else repr(a) for a in case)
            assert res.returncode == 1, (shown, res.returncode, err)
            assert "Traceback" not in err and len(err.splitlines()) == 1, (shown, err)
            assert err.startswith("nbqueue: "), (shown, err)
            assert r.keys("*") == [], (shown, r.keys("*"))
    finally:
        held.close()


@pytest.fixture
def ip(r: redis.Redis) -> Iterator[Any]:
    shell = get_ipython() or start_ipython()
    shell.run_line_magic("load_ext", "nbqueue")
    nbqueue.queue_manager.close()
    try:
        yield shell
    finally:
        nbqueue.queue_manager.close()


def test_magics_drain_writes_nothing_and_a_negative_limit_is_refused(ip: Any,
                                                                     r: redis.Redis) -> None:
    ip.run_line_magic("nbqueue", "drain 'x:y'")
    ip.run_line_magic("nbqueue", "drain never_seen --delayed")
    assert r.keys("*") == []
    with pytest.raises(UsageError, match="limit"):
        ip.run_line_magic("nbqueue", "jobs q --limit -5")
    with pytest.raises(UsageError, match="surrogate"):
        ip.run_line_magic("nbqueue", f"drain {LONE}")
    assert r.keys("*") == []


def test_limit_and_grace_are_checked_by_the_api(server: RedisProcess) -> None:
    q = Queue("q", connect(server.url))
    for bad in (-5, -1, 1.5, True):
        with pytest.raises(InvalidOptionError):
            q.jobs_frame(None, bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidOptionError):
            q.retry_failed(bad)  # type: ignore[arg-type]

    async def aio_limit() -> None:
        aq = nbqueue.aio.Queue("q", nbqueue.aio.connect(server.url))
        with pytest.raises(InvalidOptionError):
            await aq.retry_failed(-1)

    asyncio.run(aio_limit())
    assert server.client().keys("*") == []
