"""nbqueue.connection: URL resolution, password masking, fast failure, wrapped clients."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redisproc import RedisProcess, free_port

from nbqueue import server
from nbqueue.connection import Connection, connect, describe_client, mask_url
from nbqueue.errors import NbqueueError, RedisUnavailableError

SECRET = "s3cr3t-Pa55"


# -- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        (f"redis://:{SECRET}@host:6379/0", "redis://:***@host:6379/0"),
        (f"redis://alice:{SECRET}@host:6379/2", "redis://alice:***@host:6379/2"),
        (f"rediss://alice:{SECRET}@host.example:6380", "rediss://alice:***@host.example:6380"),
        (f"unix://:{SECRET}@/run/redis.sock?db=3", "unix://:***@/run/redis.sock?db=3"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        (f"redis+cluster://u:{SECRET}@n1:7000", "redis+cluster://u:***@n1:7000"),
        (f"redis://host:6379/0?password={SECRET}&db=1", "redis://host:6379/0?password=***&db=1"),
        ("redis://alice@host:6379", "redis://alice@host:6379"),  # a username alone is no secret
        (f"redis://u:{SECRET}@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        (f"redis://u:{SECRET}@host:notaport/0", "redis://u:***@host:notaport/0"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected
    assert SECRET not in mask_url(url)


def test_mask_url_password_with_odd_characters() -> None:
    masked = mask_url("redis://u:p%40ss%2Fw0rd@host:6379/0")
    assert masked == "redis://u:***@host:6379/0"


# -- resolution order ------------------------------------------------------------------------


def dead_url() -> str:
    """A URL where nothing listens (connecting there would fail)."""
    return f"redis://127.0.0.1:{free_port()}/0"


def test_explicit_url_wins(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("NBQUEUE_REDIS_URL", dead_url())
    monkeypatch.setenv("REDIS_URL", dead_url())
    with connect(redis_url) as c:
        assert c.url == redis_url
        assert c.ping()


def test_nbqueue_redis_url_before_redis_url(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("NBQUEUE_REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_URL", dead_url())
    with connect() as c:
        assert c.url == redis_url


def test_redis_url_used_when_no_nbqueue_url(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.delenv("NBQUEUE_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    with connect() as c:
        assert c.url == redis_url


def test_embedded_server_when_nothing_configured(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("emb")
    monkeypatch.delenv("NBQUEUE_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("NBQUEUE_HOME", str(home))
    try:
        with connect() as c:
            assert c.url.startswith("unix://")
            assert c.url == server.ensure_server()
            assert c.sync().set("k", "v")
            assert c.sync().get("k") == "v"
    finally:
        assert server.stop()


def test_empty_env_values_are_ignored(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("NBQUEUE_REDIS_URL", "")
    monkeypatch.setenv("REDIS_URL", redis_url)
    with connect() as c:
        assert c.url == redis_url


# -- failures --------------------------------------------------------------------------------


def test_unreachable_url_raises_quickly_and_masks_password() -> None:
    port = free_port()  # nothing listens there
    url = f"redis://user:{SECRET}@127.0.0.1:{port}/0"
    start = time.monotonic()
    with pytest.raises(RedisUnavailableError) as info:
        connect(url)
    assert time.monotonic() - start < 5
    err = info.value
    assert isinstance(err, ConnectionError)
    assert isinstance(err, NbqueueError)
    assert f"127.0.0.1:{port}" in str(err)
    assert "user:***@" in str(err)
    assert SECRET not in str(err)
    assert SECRET not in repr(err)


def test_unreachable_unix_socket_raises(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match=r"nope\.sock"):
        connect(f"unix://{tmp_path}/nope.sock")


def test_wrong_password_is_unavailable_without_leaking(redis_server: RedisProcess) -> None:
    url = f"redis://nobody:{SECRET}@127.0.0.1:{redis_server.port}/0"
    with pytest.raises(RedisUnavailableError) as info:
        connect(url)  # no such ACL user: AUTH fails
    assert SECRET not in str(info.value)


def test_repr_never_shows_password(redis_server: RedisProcess) -> None:
    c = Connection(f"redis://:{SECRET}@127.0.0.1:{redis_server.port}/0")
    assert SECRET not in repr(c)
    assert "***" in repr(c)
    assert SECRET not in describe_client(c.sync())
    c.close()


# -- clients ---------------------------------------------------------------------------------


def test_sync_client_is_cached_configured_and_tagged(conn: Connection) -> None:
    client = conn.sync()
    assert client is conn.sync()
    assert isinstance(client, redis.Redis)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["decode_responses"] is True
    assert kwargs["socket_connect_timeout"] == 5
    assert kwargs["socket_timeout"] == 30
    assert kwargs["health_check_interval"] == 15
    assert describe_client(client) == conn.masked_url == conn.url
    client.set("x", "1")
    assert client.get("x") == "1"  # str, not bytes


def test_sync_client_shared_across_threads(conn: Connection) -> None:
    seen: list[object] = []

    def work(i: int) -> None:
        c = conn.sync()
        seen.append(c)
        c.incr("counter")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen}) == 1
    assert conn.sync().get("counter") == "8"


def test_new_async_returns_fresh_clients(conn: Connection) -> None:
    async def main() -> str | None:
        a = conn.new_async()
        b = conn.new_async()
        try:
            assert a is not b
            assert isinstance(a, redis.asyncio.Redis)
            assert describe_client(a) == conn.masked_url
            await a.set("y", "2")
            value: str | None = await b.get("y")
            return value
        finally:
            await a.aclose()
            await b.aclose()

    assert asyncio.run(main()) == "2"


def test_close_then_reopen(conn: Connection) -> None:
    first = conn.sync()
    conn.close()
    assert conn.sync() is not first
    assert conn.ping()


def test_from_client_wraps_existing_client(redis_server: RedisProcess) -> None:
    user_client = redis_server.client()
    c = connect(user_client)
    assert c.sync() is user_client
    assert c.url == redis_server.url
    c.close()
    assert user_client.ping()  # never closes a client it did not make
    user_client.close()


def test_from_client_with_bytes_client_gets_decoding_sibling(
    redis_server: RedisProcess,
) -> None:
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port, db=2)
    c = Connection.from_client(raw)
    try:
        c.sync().set("z", "3")
        assert c.sync().get("z") == "3"
        assert raw.get("z") == b"3"
        assert c.url.endswith(f":{redis_server.port}/2")
    finally:
        c.sync().flushdb()
        c.close()
        raw.close()


def test_from_client_with_password_keeps_it_private() -> None:
    raw = redis.Redis(host="127.0.0.1", port=free_port(), password=SECRET, decode_responses=True)
    c = Connection.from_client(raw)
    assert SECRET in c.url  # usable by subprocess workers...
    assert SECRET not in repr(c)  # ...but never shown
    assert SECRET not in describe_client(raw)
    with pytest.raises(RedisUnavailableError) as info:
        connect(raw)
    assert SECRET not in str(info.value)


def test_describe_untagged_clients() -> None:
    assert describe_client(redis.Redis(host="h", port=7001, db=4)) == "redis://h:7001/4"
    unix = redis.Redis(unix_socket_path="/tmp/x.sock", password=SECRET)
    assert describe_client(unix) == "unix://:***@/tmp/x.sock"
    assert describe_client(object()) == "<object>"


def test_connect_returns_given_connection(conn: Connection) -> None:
    assert connect(conn) is conn


def test_cluster_scheme_is_recognised() -> None:
    c = Connection(f"redis+cluster://u:{SECRET}@127.0.0.1:7000")
    assert c.cluster
    assert SECRET not in repr(c)
    assert "cluster=True" in repr(c)
    assert Connection("rediss+cluster://h:7000").cluster
    assert not Connection("redis://h:7000").cluster
    assert Connection("redis://h:7000", cluster=True).cluster


@pytest.fixture
def cluster_node() -> Iterator[RedisProcess]:
    """A one-node Redis Cluster owning all 16384 slots."""
    proc = RedisProcess(args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
    with proc:
        client = proc.client()
        client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
        deadline = time.monotonic() + 10
        while "cluster_state:ok" not in str(client.execute_command("CLUSTER", "INFO")):
            assert time.monotonic() < deadline, "cluster did not become ok"
            time.sleep(0.05)
        client.close()
        yield proc


def test_cluster_connection_end_to_end(cluster_node: RedisProcess) -> None:
    url = f"redis+cluster://127.0.0.1:{cluster_node.port}"
    with connect(url) as c:
        assert c.cluster
        client = c.sync()
        assert isinstance(client, redis.cluster.RedisCluster)
        assert describe_client(client) == url
        client.set("{q}:a", "1")
        assert client.get("{q}:a") == "1"

        async def main() -> str | None:
            aclient = c.new_async()
            try:
                assert isinstance(aclient, redis.asyncio.cluster.RedisCluster)
                value = await aclient.get("{q}:a")
                return None if value is None else str(value)
            finally:
                await aclient.aclose()

        assert asyncio.run(main()) == "1"
    with connect(f"redis://127.0.0.1:{cluster_node.port}", cluster=True) as c2:
        assert c2.sync().get("{q}:a") == "1"


def test_cluster_scheme_on_plain_server_is_a_clear_error(redis_url: str) -> None:
    with pytest.raises(RedisUnavailableError, match="cluster"):
        connect(redis_url.replace("redis://", "redis+cluster://"))


def test_a_url_without_scheme_is_a_short_error_naming_its_source(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from nbqueue.errors import InvalidOptionError

    monkeypatch.delenv("NBQUEUE_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    with pytest.raises(InvalidOptionError, match=r"\$REDIS_URL = 'localhost:6379' is not a "
                                                 r"Redis URL: it needs a scheme, e\.g\. redis://"):
        connect()
    monkeypatch.setenv("NBQUEUE_REDIS_URL", "127.0.0.1:6379/0")
    with pytest.raises(InvalidOptionError, match=r"\$NBQUEUE_REDIS_URL = '127\.0\.0\.1"):
        connect()
    with pytest.raises(InvalidOptionError, match=r"url argument .*'u:\*\*\*@h:1'"):
        connect("u:secret@h:1")  # the password is masked
    with pytest.raises(InvalidOptionError, match="not a Redis URL"):
        connect("http://localhost:6379")
    # the command line: one line on stderr, exit status 1, no traceback
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["NBQUEUE_REDIS_URL"] = "localhost:6379"
    res = subprocess.run([sys.executable, "-m", "nbqueue", "stats"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "nbqueue: $NBQUEUE_REDIS_URL = 'localhost:6379' is not a Redis URL: it needs a "
        "scheme, e.g. redis://localhost:6379/0 (rediss:// for TLS, "
        "unix:///path/to/redis.sock, redis+cluster://host:7000 for Redis Cluster, "
        "redis+sentinel://host:26379/mymaster for Sentinel)"]


def test_sentinel_urls_parse_tls_and_credentials_for_both_sides() -> None:
    from nbqueue.sentinel import parse_sentinel_url

    url = ("rediss+sentinel://alice:p%40ss@s1:26380,[::1],s3/mymaster/2"
           "?sentinel_password=spw&ssl_cert_reqs=required&ssl_ca_certs=/ca.pem")
    spec = parse_sentinel_url(url, mask_url(url))
    assert spec.sentinels == (("s1", 26380), ("::1", 26379), ("s3", 26379))
    assert (spec.service, spec.db, spec.tls) == ("mymaster", 2, True)
    data = spec.data_kwargs()  # the primary: the URL's user, TLS options
    assert (data["username"], data["password"], data["db"], data["ssl"]) == \
        ("alice", "p@ss", 2, True)
    assert data["ssl_ca_certs"] == "/ca.pem" and data["ssl_cert_reqs"] == "required"
    side = spec.sentinel_kwargs({"socket_timeout": 3.0})  # the sentinels: their own auth
    assert side["password"] == "spw" and "username" not in side and side["ssl"] is True
    assert side["ssl_ca_certs"] == "/ca.pem" and side["socket_timeout"] == 3.0
    masked = mask_url(url)
    assert "p%40ss" not in masked and "spw" not in masked and "alice:***@" in masked
    assert "sentinel_password=***" in masked
    assert "spw" not in repr(spec) and "p@ss" not in repr(spec)
