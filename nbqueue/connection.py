"""Where nbqueue's Redis is, and the redis-py clients that talk to it.

:func:`connect` resolves the URL (explicit, ``NBQUEUE_REDIS_URL``, ``REDIS_URL``, else the
embedded server of :mod:`nbqueue.server`), checks it once with PING, and returns a
:class:`Connection`: a cached thread-safe sync client plus a factory of asyncio clients, all
configured the same way (decoded replies, bounded timeouts, retries with backoff on
connection errors). Passwords never appear in reprs or error messages (:func:`mask_url`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import warnings
from typing import Any
from urllib.parse import quote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from . import keepalive
from . import sentinel as _sentinel
from .durations import to_ms
from .errors import EvictionPolicyError, InvalidOptionError, RedisUnavailableError

__all__ = ["Connection", "connect", "describe_client", "mask_url"]

ENV_URL = "NBQUEUE_REDIS_URL"
ENV_FALLBACK_URL = "REDIS_URL"
#: ``1``/``true``/``yes``: accept a Redis whose ``maxmemory-policy`` is ``allkeys-*``.
ENV_ALLOW_EVICTION = "NBQUEUE_ALLOW_EVICTION"

log = logging.getLogger("nbqueue.connection")

#: Seconds to open a TCP/unix connection; an unreachable server fails :func:`connect` in ~this.
SOCKET_CONNECT_TIMEOUT = 5.0
#: Read timeout; nbqueue's blocking commands block at most ~5 s, far below this.
SOCKET_TIMEOUT = 30.0
HEALTH_CHECK_INTERVAL = 15
RETRIES = 3

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_QUERY_SECRET_RE = re.compile(r"(?i)((?:^|&)(?:[a-z_]*password|pass|auth)=)[^&#]*")
#: how long an add on a ``min_replicas`` connection waits for its replicas (``WAIT``), ms
DEFAULT_REPLICA_TIMEOUT_MS = 2000
# Fallback for strings urlsplit rejects: mask anything between "scheme://user:" and "@".
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:@/]*):[^@]*@")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (userinfo and ``?password=``).

    ``redis://user:s3cret@h:6379/0`` -> ``redis://user:***@h:6379/0``;
    ``unix://:s3cret@/run/redis.sock?db=1`` -> ``unix://:***@/run/redis.sock?db=1``.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return _USERINFO_RE.sub(r"\1:***@", text)
    if not parts.scheme or "://" not in text:
        return _USERINFO_RE.sub(r"\1:***@", text)
    head = f"{parts.scheme}://"
    rest = text[text.index("://") + 3 :]
    netloc = parts.netloc
    if netloc and rest.startswith(netloc):
        rest = rest[len(netloc) :]
        userinfo, at, hostport = netloc.rpartition("@")
        if at and ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    else:  # unexpected shape: be conservative
        return _USERINFO_RE.sub(r"\1:***@", text)
    if "?" in rest:
        path, _, query = rest.partition("?")
        rest = path + "?" + _QUERY_SECRET_RE.sub(r"\1***", query)
    return head + netloc + rest


def _client_kwargs(*, asyncio: bool) -> dict[str, Any]:
    """The options every nbqueue client gets (see module docstring)."""
    retry: Any
    if asyncio:
        retry = redis.asyncio.retry.Retry(ExponentialBackoff(cap=2, base=0.05), RETRIES)
    else:
        retry = Retry(ExponentialBackoff(cap=2, base=0.05), RETRIES)
    return {
        "decode_responses": True,
        # Bytes that are not UTF-8 (a hand-written binary value) decode with U+FFFD instead of
        # raising mid-reply, which would leave the connection unusable; nbqueue itself only
        # ever writes UTF-8 JSON, so such a job then fails as corrupt.
        "encoding_errors": "replace",
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "retry": retry,
    }


def _split_cluster_scheme(url: str) -> tuple[str, bool]:
    """Rewrite ``redis+cluster://`` / ``rediss+cluster://`` to what redis-py understands."""
    scheme, sep, rest = url.partition("://")
    plain = _CLUSTER_SCHEMES.get(scheme.lower())
    if sep and plain:
        return f"{plain}://{rest}", True
    return url, False


class Connection:
    """A Redis location plus its clients: one cached sync client, new async ones on demand.

    ``url`` keeps the URL as given (with its password, so subprocess workers can reconnect);
    ``repr()`` and error messages show only :attr:`masked_url`.
    """

    url: str
    cluster: bool
    #: the parsed ``redis+sentinel://`` URL (None: a plain, unix or cluster URL)
    sentinel: _sentinel.SentinelSpec | None
    #: an add returns once this many replicas hold it (``WAIT``); 0: on the primary's reply
    min_replicas: int
    #: how long (ms) an add waits for ``min_replicas`` replicas before it raises
    #: :class:`~nbqueue.errors.NotReplicatedError`
    replica_timeout_ms: int

    def __init__(self, url: str, *, cluster: bool = False, store: str | None = None,
                 min_replicas: int = 0,
                 replica_timeout: Any = DEFAULT_REPLICA_TIMEOUT_MS) -> None:
        redis_url, scheme_cluster = _split_cluster_scheme(url)
        # the artifact store (nbqueue.artifacts): resolved on first use (None: $NBQUEUE_STORE,
        # else "redis")
        self._store = store
        self._store_resolved: str | None = None
        self.url = url
        self.cluster = cluster or scheme_cluster
        self._redis_url = redis_url
        self.sentinel = (_sentinel.parse_sentinel_url(url, mask_url(url))
                         if _sentinel.is_sentinel_url(url) else None)
        if self.sentinel is not None and self.cluster:
            raise InvalidOptionError(f"{mask_url(url)!r}: a Sentinel URL cannot also be a "
                                     "cluster (cluster=True)")
        self.min_replicas, self.replica_timeout_ms = _replica_options(
            min_replicas, replica_timeout, self.cluster)
        #: the home of the embedded server this connection points at (None: not embedded);
        #: its clients restart that server when they find it dead (nbqueue.server.revive)
        self.embedded_home: Any = None
        self._lock = threading.Lock()
        self._sync: Any = None
        self._owns_sync = True

    @classmethod
    def from_client(cls, client: redis.Redis | redis.cluster.RedisCluster) -> Connection:
        """Wrap an existing sync client; its location becomes :attr:`url`.

        The client is used as is when it decodes responses (nbqueue needs ``str`` replies),
        otherwise a sibling client with the same connection options is made. nbqueue never
        closes a client it did not make.
        """
        conn = cls(_url_from_client(client, reveal_password=True))
        if isinstance(client, redis.cluster.RedisCluster):
            conn.cluster = True
            conn._sync, conn._owns_sync = client, False
        elif _decodes(client):
            conn._sync = client
            conn._owns_sync = False
        else:  # a sibling that decodes; ours to close
            pool = client.connection_pool
            kwargs = dict(pool.connection_kwargs)
            kwargs["decode_responses"] = True
            new_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            conn._sync = redis.Redis(connection_pool=new_pool)
        _tag(conn._sync, conn.masked_url)
        return conn

    @property
    def store(self) -> str:
        """Where artifacts (frames, arrays) written through this connection go: ``"redis"``
        or an fsspec URL (``connect(url, store=...)``, else ``$NBQUEUE_STORE``)."""
        if self._store_resolved is None:
            from .artifacts import resolve_store

            self._store_resolved = resolve_store(self._store)
        return self._store_resolved

    @property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***``."""
        return mask_url(self.url)

    def sync(self) -> Any:
        """The shared, thread-safe sync client (``redis.Redis`` or ``RedisCluster``)."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self._make_sync()
                client = self._sync
        return client

    def new_async(self) -> Any:
        """A NEW asyncio client (``redis.asyncio.Redis`` or its ``RedisCluster``).

        Async clients are bound to the event loop they first run on, so each caller gets its
        own and must ``await client.aclose()`` it.
        """
        kwargs = {**_client_kwargs(asyncio=True), **keepalive.options(self._redis_url)}
        client: Any
        if self.sentinel is not None:
            client = _sentinel.async_client(self.sentinel, kwargs)
        elif self.cluster:
            client = redis.asyncio.cluster.RedisCluster.from_url(self._redis_url, **kwargs)
        else:
            client = redis.asyncio.Redis.from_url(self._redis_url, **kwargs)
        return _tag(client, self.masked_url, self.embedded_home)

    def ping(self) -> bool:
        """True when the server answers PING (never raises)."""
        try:
            return bool(self.sync().ping())
        except (redis.RedisError, OSError):
            return False

    def close(self) -> None:
        """Close the cached sync client (if nbqueue made it); a later :meth:`sync` reopens."""
        with self._lock:
            client, self._sync = self._sync, None
            owned, self._owns_sync = self._owns_sync, True
        if client is not None and owned:
            client.close()

    def check(self) -> None:
        """PING once, without retries; raise :class:`RedisUnavailableError` if unreachable."""
        probe: Any = None
        if self.sentinel is not None and self._owns_sync:
            # which sentinels answer, and whether they know the service: a clear error
            _sentinel.check(self.sentinel, self.masked_url, _client_kwargs(asyncio=False))
        try:
            if isinstance(self._sync, redis.cluster.RedisCluster):
                self._sync.ping()  # a cluster client the user gave us
            elif self._sync is not None and not self._owns_sync:
                probe = _probe_like(self._sync)  # same options as the user's, no retries
                probe.ping()
            else:
                # A throwaway client without retries, so a dead server fails fast; for a
                # cluster, constructing it already contacts the startup nodes.
                probe = self._make_sync(probe=True)
                probe.ping()
        except (redis.RedisError, RedisClusterException, OSError) as exc:
            raise RedisUnavailableError(
                f"Redis is unavailable at {self.masked_url}: {_scrub(str(exc), self.url)}"
            ) from None
        finally:
            if probe is not None:
                probe.close()

    def check_eviction_policy(self, allow_eviction: bool = False) -> str | None:
        """Read the server's ``maxmemory-policy`` (``INFO memory``, else ``CONFIG GET``) and
        judge it; returns the policy (None if it could not be read).

        ``allkeys-*`` evicts any key when memory is full (queued jobs, the id counter) without
        a word: refused with :class:`~nbqueue.errors.EvictionPolicyError` unless
        ``allow_eviction``. ``volatile-*`` evicts only keys with a ttl (nbqueue's jobs have
        none, but its short-lived keys do): a warning. A user allowed to read neither
        (an ACL without ``info``/``config``) gets one warning per URL, and nbqueue goes on.
        """
        policy = self._read_policy()
        if policy is None:
            if self.masked_url not in _POLICY_UNKNOWN_WARNED:
                _POLICY_UNKNOWN_WARNED.add(self.masked_url)
                warnings.warn(
                    f"nbqueue could not read maxmemory-policy of Redis at {self.masked_url} "
                    "(neither INFO nor CONFIG GET is allowed for this user); make sure it is "
                    "noeviction: any other policy can silently delete queued jobs",
                    RuntimeWarning, stacklevel=3)
            return None
        if policy.startswith("allkeys-"):
            msg = (f"Redis at {self.masked_url} has maxmemory-policy {policy}: when its memory "
                   "is full it evicts any key, silently deleting queued jobs (and the id "
                   "counter, so ids are reused). Set maxmemory-policy noeviction on the server "
                   "(CONFIG SET maxmemory-policy noeviction, redis.conf, or your provider's "
                   "parameter group); nbqueue then raises RedisOutOfMemoryError when memory "
                   "is full instead. To accept eviction anyway: connect(..., "
                   f"allow_eviction=True) or {ENV_ALLOW_EVICTION}=1.")
            if not allow_eviction:
                raise EvictionPolicyError(msg)
            log.warning("%s (allowed by allow_eviction)", msg)
        elif policy.startswith("volatile-"):
            warnings.warn(
                f"Redis at {self.masked_url} has maxmemory-policy {policy}: keys with a ttl "
                "can be evicted when memory is full (nbqueue's idempotency tokens, "
                "deduplication and hand-off keys among them); noeviction is recommended",
                RuntimeWarning, stacklevel=3)
        return policy

    def _read_policy(self) -> str | None:
        probe: Any = None
        try:
            if isinstance(self._sync, redis.cluster.RedisCluster):
                probe, owned = self._sync, False
            elif self._sync is not None and not self._owns_sync:
                probe, owned = _probe_like(self._sync), True
            else:
                # retries: the server just answered PING; a connection cut now (CLIENT KILL,
                # a blip) must not fail connect()
                probe, owned = self._make_sync(probe=True, retries=2), True
            try:
                info = probe.info("memory")
                policy = _find_policy(info)
                if policy:
                    return policy
            except redis.ResponseError:  # NOPERM: an ACL user without +info
                pass
            try:
                found = probe.config_get("maxmemory-policy")
                return _find_policy(found) or None
            except redis.ResponseError:  # NOPERM, or CONFIG renamed/disabled
                return None
        except (redis.RedisError, RedisClusterException, OSError) as exc:
            raise RedisUnavailableError(
                f"Redis is unavailable at {self.masked_url}: {_scrub(str(exc), self.url)}"
            ) from None
        finally:
            if probe is not None and owned:
                probe.close()

    def new_sync(self, *, socket_timeout: float, retries: int = 0) -> Any:
        """A NEW sync client whose every read gives up after ``socket_timeout`` seconds, with
        ``retries`` retries: for callers that must answer promptly whatever Redis does (a
        Prometheus scrape of a frozen Redis). The caller closes it."""
        if self._sync is not None and not self._owns_sync and \
                not isinstance(self._sync, redis.cluster.RedisCluster):
            client = _probe_like(self._sync)  # the user's client's options, bounded
            client.connection_pool.connection_kwargs["socket_timeout"] = socket_timeout
            return _tag(client, self.masked_url, self.embedded_home)
        return self._make_sync(probe=True, socket_timeout=socket_timeout, retries=retries)

    def _make_sync(self, *, probe: bool = False, socket_timeout: float | None = None,
                   retries: int = 0) -> Any:
        kwargs = {**_client_kwargs(asyncio=False), **keepalive.options(self._redis_url)}
        if probe:
            kwargs["retry"] = Retry(NoBackoff(), retries)
            kwargs.pop("health_check_interval")
            # a PING (or a scrape) needs no long read: a frozen server fails it in seconds
            kwargs["socket_timeout"] = socket_timeout or SOCKET_CONNECT_TIMEOUT
        client: Any
        if self.sentinel is not None:
            client = _sentinel.sync_client(self.sentinel, kwargs)
        elif self.cluster:
            client = redis.cluster.RedisCluster.from_url(self._redis_url, **kwargs)
        else:
            client = redis.Redis.from_url(self._redis_url, **kwargs)
        return _tag(client, self.masked_url, self.embedded_home)

    def spec(self) -> dict[str, Any]:
        """What another process needs to make the same connection (:meth:`from_spec`)."""
        return {"url": self.url, "cluster": self.cluster, "min_replicas": self.min_replicas,
                "replica_timeout": self.replica_timeout_ms}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], store: str | None = None) -> Connection:
        return cls(spec["url"], cluster=spec.get("cluster", False), store=store,
                   min_replicas=spec.get("min_replicas", 0),
                   replica_timeout=spec.get("replica_timeout", DEFAULT_REPLICA_TIMEOUT_MS))

    def __repr__(self) -> str:
        kind = ", cluster=True" if self.cluster else ""
        if self.min_replicas:
            kind += f", min_replicas={self.min_replicas}"
        return f"Connection({self.masked_url!r}{kind})"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(
    url: str | redis.Redis | Connection | None = None, *, cluster: bool | None = None,
    allow_eviction: bool | None = None, store: str | None = None, min_replicas: int = 0,
    replica_timeout: Any = DEFAULT_REPLICA_TIMEOUT_MS,
) -> Connection:
    """Resolve nbqueue's Redis and check it answers; returns a :class:`Connection`.

    Order: ``url`` (a URL, an existing ``redis.Redis``, or a ``Connection``), else
    ``$NBQUEUE_REDIS_URL``, else ``$REDIS_URL``, else the embedded per-user server
    (:func:`nbqueue.server.ensure_server`). ``redis+cluster://`` / ``rediss+cluster://``
    or ``cluster=True`` select Redis Cluster. An unreachable server raises
    :class:`~nbqueue.errors.RedisUnavailableError` (also a ``ConnectionError``) naming the
    masked URL, within about ``SOCKET_CONNECT_TIMEOUT`` seconds.

    The server's ``maxmemory-policy`` is checked (:meth:`Connection.check_eviction_policy`):
    ``allkeys-*`` raises :class:`~nbqueue.errors.EvictionPolicyError` unless
    ``allow_eviction=True`` (or ``$NBQUEUE_ALLOW_EVICTION=1``); ``volatile-*`` warns.

    ``store``: where DataFrames, Series and arrays of map chunks and results go
    (:mod:`nbqueue.artifacts`): ``"redis"`` (the default) or an fsspec URL
    (``file:///shared/nbq``, ``s3://bucket/prefix``); else ``$NBQUEUE_STORE``. An fsspec
    store is checked here (backend installed, location writable).

    ``redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB]`` (and
    ``rediss+sentinel://``) connects to SERVICE's current primary through Redis Sentinel
    (:mod:`nbqueue.sentinel`). ``min_replicas=N`` (N >= 1): every add returns only once N
    replicas hold it (``WAIT N replica_timeout``, after the add, on the same connection);
    otherwise it raises :class:`~nbqueue.errors.NotReplicatedError` naming the jobs that
    were written on the primary (docs/scaling.md: the cost per add and the failover
    figures). ``replica_timeout``: ms (or a timedelta), default 2000.
    """
    if isinstance(url, Connection):
        if store is not None:
            url._store, url._store_resolved = store, None
            _ = url.store
        if min_replicas and url.min_replicas != min_replicas:
            raise InvalidOptionError("connect(Connection, min_replicas=...): give "
                                     "min_replicas when the Connection is made")
        return url
    conn: Connection
    if isinstance(url, (redis.Redis, redis.cluster.RedisCluster)):
        conn = Connection.from_client(url)
        conn.min_replicas, conn.replica_timeout_ms = _replica_options(
            min_replicas, replica_timeout, conn.cluster)
    else:
        from . import server

        resolved = url or os.environ.get(ENV_URL) or os.environ.get(ENV_FALLBACK_URL)
        if not resolved:
            resolved = server.ensure_server()
        else:
            _check_scheme(resolved, "url" if url else ENV_URL if os.environ.get(ENV_URL)
                          else ENV_FALLBACK_URL)
        conn = Connection(resolved, cluster=bool(cluster), min_replicas=min_replicas,
                          replica_timeout=replica_timeout)
        # The embedded server (by default, or by its URL): restarted when found dead.
        conn.embedded_home = server.embedded_home_of(resolved)
    conn.check()
    if allow_eviction is None:
        allow_eviction = os.environ.get(ENV_ALLOW_EVICTION, "").strip().lower() in (
            "1", "true", "yes", "on")
    conn.check_eviction_policy(allow_eviction)
    conn._store = store
    _ = conn.store  # a bad store fails here, not at the first map
    return conn


URL_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster",
               *_sentinel.SENTINEL_SCHEMES)


def _check_scheme(url: str, source: str) -> None:
    """A URL without a known scheme (``localhost:6379``) is a one-line error naming where
    it came from (``url`` argument / ``--url``, or the environment variable), not a long
    redis-py traceback."""
    text = str(url)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in URL_SCHEMES:
        return
    where = "the url argument (or --url)" if source == "url" else f"${source}"
    shown = re.sub(r"^([^@/]*?):[^@]*@", r"\1:***@", mask_url(text))  # user:pw@host
    raise InvalidOptionError(
        f"{where} = {shown!r} is not a Redis URL: it needs a scheme, e.g. "
        "redis://localhost:6379/0 (rediss:// for TLS, unix:///path/to/redis.sock, "
        "redis+cluster://host:7000 for Redis Cluster, "
        "redis+sentinel://host:26379/mymaster for Sentinel)")


def _replica_options(min_replicas: Any, replica_timeout: Any, cluster: bool
                     ) -> tuple[int, int]:
    """Validated ``min_replicas`` and ``replica_timeout`` (ms)."""
    if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) \
            or min_replicas < 0:
        raise InvalidOptionError(f"min_replicas must be an int >= 0 (replicas that must "
                                 f"hold each add before it returns): {min_replicas!r}")
    if min_replicas and cluster:
        raise InvalidOptionError(
            "min_replicas is not supported on Redis Cluster: WAIT must run on the "
            "connection that wrote, which redis-py's cluster client does not expose; "
            "use Sentinel (redis+sentinel://) or a single primary with replicas")
    return min_replicas, to_ms(replica_timeout, "replica_timeout", allow_zero=False)


def describe_client(client: Any) -> str:
    """A masked description (URL-like) of where ``client`` points, for error messages."""
    tagged = getattr(client, "_nbqueue_url", None)
    if isinstance(tagged, str):
        return tagged
    try:
        return mask_url(_url_from_client(client, reveal_password=False))
    except Exception:
        return f"<{type(client).__name__}>"


# -- internals -------------------------------------------------------------------------------

_POLICY_UNKNOWN_WARNED: set[str] = set()


def _find_policy(found: Any) -> str | None:
    """``maxmemory-policy`` from an INFO/CONFIG GET reply (a cluster's: any node's,
    the most dangerous first)."""
    if not isinstance(found, dict):
        return None
    for key in ("maxmemory_policy", "maxmemory-policy"):
        if isinstance(found.get(key), str):
            return str(found[key])
    nested = [p for p in (_find_policy(v) for v in found.values()) if p]
    for prefix in ("allkeys-", "volatile-"):
        for p in nested:
            if p.startswith(prefix):
                return p
    return nested[0] if nested else None


def _tag(client: Any, masked: str, embedded_home: Any = None) -> Any:
    with contextlib.suppress(AttributeError):  # e.g. __slots__: describe_client uses the pool
        client._nbqueue_url = masked
        if embedded_home is not None:
            client._nbqueue_embedded = embedded_home
    return client


def _probe_like(client: redis.Redis) -> redis.Redis:
    """A throwaway client with ``client``'s connection options but no retries."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    timeout = kwargs.get("socket_connect_timeout")
    kwargs["socket_connect_timeout"] = min(
        timeout or SOCKET_CONNECT_TIMEOUT, SOCKET_CONNECT_TIMEOUT
    )
    probe_pool = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=probe_pool)


def _decodes(client: Any) -> bool:
    try:
        return bool(client.get_encoder().decode_responses)
    except Exception:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
        return bool(kwargs.get("decode_responses"))


def _url_from_client(client: Any, *, reveal_password: bool) -> str:
    """Rebuild a URL from a redis-py client's connection options (sync, async or cluster)."""
    if isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)):
        node = client.get_default_node()
        if node is None:
            nodes = client.get_nodes()
            node = nodes[0] if nodes else None
        host, port = (node.host, node.port) if node is not None else ("?", "?")
        kwargs = dict(client.nodes_manager.connection_kwargs)
        scheme = "rediss+cluster" if kwargs.get("ssl") else "redis+cluster"
        auth = _userinfo(kwargs, reveal_password)
        return f"{scheme}://{auth}{host}:{port}"
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        raise TypeError(f"not a redis client: {type(client).__name__}")
    kwargs = dict(getattr(pool, "connection_kwargs", {}) or {})
    auth = _userinfo(kwargs, reveal_password)
    db = int(kwargs.get("db") or 0)
    path = kwargs.get("path") or kwargs.get("unix_socket_path")
    if path:
        query = f"?db={db}" if db else ""
        return f"unix://{auth}{path}{query}"
    cls_name = getattr(getattr(pool, "connection_class", None), "__name__", "")
    scheme = "rediss" if "SSL" in cls_name or kwargs.get("ssl") else "redis"
    host = kwargs.get("host", "localhost")
    if ":" in str(host):
        host = f"[{host}]"
    port = kwargs.get("port", 6379)
    return f"{scheme}://{auth}{host}:{port}/{db}"


def _userinfo(kwargs: dict[str, Any], reveal_password: bool) -> str:
    username = kwargs.get("username")
    password = kwargs.get("password")
    user = quote(str(username), safe="") if username else ""
    if password:
        secret = quote(str(password), safe="") if reveal_password else "***"
        return f"{user}:{secret}@"
    return f"{user}@" if user else ""


def _scrub(message: str, url: str) -> str:
    """Remove the password of ``url`` from ``message``, should redis-py ever echo it."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password and password in message:
        message = message.replace(password, "***")
    return message
