"""A primary, one replica and three sentinels on loopback, as real processes.

``SentinelSet`` starts them with the test server binary (``tests/redisproc.py``: the system
redis-server, or ``$NBQUEUE_TEST_SERVER``); the sentinels run as ``<server> sentinel.conf
--sentinel`` with their own config files. Used by test_sentinel.py.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redisproc import RedisProcess, free_port, server_binary

SERVICE = "nbqsvc"
DOWN_AFTER_MS = 1000


class SentinelSet:
    """``primary`` + ``replica`` (RedisProcess) and ``sentinel_ports`` (3 sentinels)."""

    def __init__(self, n_sentinels: int = 3, *, acl_user: tuple[str, str] | None = None,
                 sentinel_password: str | None = None, tls_cert: Path | None = None,
                 tls_key: Path | None = None) -> None:
        """``acl_user``: (name, password) of an ACL user on the primary and the replica;
        ``sentinel_password``: the sentinels' requirepass; ``tls_cert``/``tls_key``: every
        server (data nodes and sentinels) speaks only TLS, replication included (the
        certificate is its own CA; clients are not asked for certificates)."""
        self.binary = server_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="nbq-sentinel-"))
        self.acl_user = acl_user
        self.sentinel_password = sentinel_password
        self.tls_cert = tls_cert
        self._acl = (["--user", acl_user[0], "on", f">{acl_user[1]}", "~*", "&*", "+@all"]
                     if acl_user else [])
        #: options of every test client (TLS: verify against the certificate)
        self.client_kwargs: dict[str, Any] = (
            {"ssl": True, "ssl_ca_certs": str(tls_cert)} if tls_cert else {})
        self._tls_conf: dict[str, str] = ({
            "tls-cert-file": str(tls_cert), "tls-key-file": str(tls_key),
            "tls-ca-cert-file": str(tls_cert), "tls-auth-clients": "no",
            "tls-replication": "yes"} if tls_cert else {})
        self.primary = self._node("primary")
        self.replica: RedisProcess | None = None
        self.n_sentinels = n_sentinels
        self.sentinel_ports: list[int] = []
        self.sentinels: list[subprocess.Popen[bytes]] = []

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> SentinelSet:
        """Start everything (a failure cleans up what started, then raises)."""
        try:
            return self._start()
        except BaseException:
            self.cleanup()
            raise

    def _start(self) -> SentinelSet:
        (self.dir / "primary").mkdir()
        (self.dir / "replica").mkdir()
        self.primary.start()
        self.replica = self._node("replica", "--replicaof", "127.0.0.1",
                                  str(self.primary.port)).start()
        self.wait_replicated()
        # Each sentinel is told the others (ids and ports) up front: no waiting for their
        # hello messages (one every 2 s) before a failover can be agreed.
        self.sentinel_ports = [free_port() for _ in range(self.n_sentinels)]
        ids = [secrets.token_hex(20) for _ in self.sentinel_ports]
        for i, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{i}.conf"
            known = "".join(f"sentinel known-sentinel {SERVICE} 127.0.0.1 {p} {ids[j]}\n"
                            for j, p in enumerate(self.sentinel_ports) if j != i)
            tls = "".join(f"{k} {v}\n" for k, v in self._tls_conf.items())
            ports = f"port 0\ntls-port {port}\n{tls}" if tls else f"port {port}\n"
            conf.write_text(
                f"{ports}bind 127.0.0.1\ndir {self.dir}\n"
                f"logfile {self.dir}/sentinel-{i}.log\nsentinel myid {ids[i]}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 4000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                f"sentinel known-replica {SERVICE} 127.0.0.1 {self.replica.port}\n" + known
                + (f"requirepass {sentinel_password}\n" if (sentinel_password :=
                                                            self.sentinel_password) else ""))
            self.sentinels.append(subprocess.Popen(
                [self.binary, str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            # ... and the replica acknowledges a write: right after start it may still be
            # syncing (seen: slave0 state=wait_bgsave), or online at offset 0 and slow to
            # ack the first write (a test's first WAIT of 300 ms timed out, 3 runs in 6)
            if all(self._sentinel_sees_all(p) for p in self.sentinel_ports) \
                    and self._replica_online():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"sentinels did not come up: {self.log_tail()}")

    def _replica_online(self) -> bool:
        """The primary sees its replica online, and the replica acknowledges a write (a
        PUBLISH: replicated, and it touches no key)."""
        c = self.primary.client()
        try:
            info = c.info("replication")
            return info.get("connected_slaves") == 1 \
                and info.get("slave0", {}).get("state") == "online" \
                and c.publish("nbq-test-probe", "1") >= 0 \
                and int(c.execute_command("WAIT", 1, 200)) >= 1
        except (redis.RedisError, OSError):
            return False
        finally:
            c.close()

    def sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis("127.0.0.1", port, socket_timeout=1, decode_responses=True,
                           password=self.sentinel_password, **self.client_kwargs)

    def _node(self, name: str, *extra: str) -> RedisProcess:
        port = free_port()
        tls: list[str] = []
        if self._tls_conf:  # TLS only: the plain port off, the TLS port where port was
            tls = ["--port", "0", "--tls-port", str(port)]
            for k, v in self._tls_conf.items():
                tls += [f"--{k}", v]
        # no 5 s wait before the first full sync (repl-diskless-sync-delay)
        proc = RedisProcess(port=port, data_dir=self.dir / name,
                            args=["--repl-diskless-sync-delay", "0", *self._acl, *tls,
                                  *extra])
        if self._tls_conf:
            def ping() -> bool:
                c = redis.Redis("127.0.0.1", port, socket_connect_timeout=0.5,
                                socket_timeout=1, **self.client_kwargs)
                try:
                    return bool(c.ping())
                except (redis.RedisError, OSError):
                    return False
                finally:
                    c.close()

            proc.ping = ping  # type: ignore[method-assign]
            proc.client = lambda **kw: redis.Redis(  # type: ignore[method-assign]
                "127.0.0.1", port, decode_responses=True, **{**self.client_kwargs, **kw})
        return proc

    def _sentinel_sees_all(self, port: int) -> bool:
        c = self.sentinel_client(port)
        try:
            m = c.sentinel_master(SERVICE)
            return int(m.get("num-slaves", 0)) >= 1 and \
                int(m.get("num-other-sentinels", 0)) >= self.n_sentinels - 1
        except (redis.RedisError, OSError):
            return False
        finally:
            c.close()

    def wait_replicated(self, timeout: float = 15) -> None:
        assert self.replica is not None
        c = self.replica.client()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    if c.info("replication").get("master_link_status") == "up":
                        return
                time.sleep(0.05)
        finally:
            c.close()
        raise RuntimeError("the replica did not sync")

    def url(self, scheme: str = "redis+sentinel", auth: str = "", query: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"{scheme}://{auth}{hosts}/{SERVICE}/0{query}"

    def master_port(self) -> int | None:
        """The primary's port according to a majority of sentinels (None: no agreement)."""
        seen: dict[int, int] = {}
        for port in self.sentinel_ports:
            c = self.sentinel_client(port)
            with contextlib.suppress(redis.RedisError, OSError):
                addr = c.sentinel_get_master_addr_by_name(SERVICE)
                if addr:
                    seen[int(addr[1])] = seen.get(int(addr[1]), 0) + 1
            c.close()
        for p, n in seen.items():
            if n >= 2:
                return p
        return None

    def wait_promoted(self, timeout: float = 20) -> float:
        """Wait until the sentinels name the replica primary and it answers as one;
        returns the seconds it took."""
        assert self.replica is not None
        t0 = time.monotonic()
        c = self.replica.client(socket_timeout=1)
        try:
            while time.monotonic() - t0 < timeout:
                with contextlib.suppress(redis.RedisError):
                    if self.master_port() == self.replica.port and \
                            c.info("replication").get("role") == "master":
                        return time.monotonic() - t0
                time.sleep(0.05)
        finally:
            c.close()
        raise RuntimeError(f"no failover within {timeout} s: {self.log_tail()}")

    def hold_replication(self) -> None:
        """Hold replication: SIGSTOP the replica, then make the primary drop its link
        (CLIENT KILL TYPE replica), so that nothing the primary writes from now on reaches
        the replica (a stopped replica would still find the bytes already sent in its
        socket buffer) and it cannot reconnect. The primary goes on acknowledging writes."""
        assert self.replica is not None and self.replica.proc is not None
        self.replica.proc.send_signal(signal.SIGSTOP)
        c = self.primary.client()
        try:
            c.execute_command("CLIENT", "KILL", "TYPE", "replica")
        finally:
            c.close()

    def resume_replica(self) -> None:
        assert self.replica is not None and self.replica.proc is not None
        self.replica.proc.send_signal(signal.SIGCONT)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for f in sorted(self.dir.glob("sentinel-*.log")):
            out.append(f"--- {f.name}\n" + "\n".join(
                f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def cleanup(self) -> None:
        for proc in self.sentinels:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if self.replica is not None:
            with contextlib.suppress(OSError):
                self.resume_replica()
            self.replica.cleanup()
        self.primary.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelSet:
        if self.primary.running:  # started already (start() then `with`)
            return self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
