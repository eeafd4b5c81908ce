"""Shared fixtures: one private Redis per test session, and isolation from the user's setup.

At session start ``NBQUEUE_REDIS_URL`` points at a throw-away redis-server on a free loopback
port and ``NBQUEUE_HOME`` at a temp dir, so nothing in the suite (nor any subprocess worker,
which inherits the environment) ever touches port 6379 or the user's embedded server.
Feature-specific helpers belong in other modules (e.g. ``tests/helpers.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `from redisproc import ...`

from redisproc import RedisProcess

from nbqueue.connection import Connection, connect

_ENV_KEYS = ("NBQUEUE_REDIS_URL", "NBQUEUE_HOME")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """The session's private redis-server (persistence off), stopped at the end."""
    with RedisProcess(appendonly=False) as proc:
        yield proc


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Point nbqueue at the private server and a temp home for the whole session."""
    saved = {key: os.environ.get(key) for key in _ENV_KEYS}
    home = tmp_path_factory.mktemp("nbqueue-home")
    os.environ["NBQUEUE_REDIS_URL"] = redis_server.url
    os.environ["NBQUEUE_HOME"] = str(home)
    try:
        yield
    finally:
        from nbqueue import server

        try:  # a test that started the embedded server under this home must not leak it
            os.environ["NBQUEUE_HOME"] = str(home)
            server.stop()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisProcess) -> str:
    """URL of the session's private redis-server (``redis://127.0.0.1:<port>/0``)."""
    return redis_server.url


@pytest.fixture
def r(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    """A ``redis.Redis(decode_responses=True)`` to the private server, after FLUSHALL."""
    if not redis_server.running:  # a test may have stopped or killed it
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def conn(r: redis.Redis, redis_url: str) -> Iterator[Connection]:
    """``nbqueue.connection.connect(redis_url)`` on an empty server, closed afterwards."""
    connection = connect(redis_url)
    try:
        yield connection
    finally:
        connection.close()
