"""Fixtures of the reliability suite (``pytest -m reliability``).

Each test that breaks Redis gets its own private server (``fresh_server``), never the
session's shared one, so a restart or a kill cannot disturb other tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import rhelpers`

from redisproc import RedisProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def fresh_server() -> Iterator[RedisProcess]:
    """A private redis-server for one test (persistence off)."""
    with RedisProcess(appendonly=False) as proc:
        yield proc


@pytest.fixture
def aof_server() -> Iterator[RedisProcess]:
    """A private redis-server with AOF on (``appendfsync always``), restartable."""
    proc = RedisProcess(appendonly=True, args=["--appendfsync", "always"])
    proc.start()
    try:
        yield proc
    finally:
        proc.cleanup()
