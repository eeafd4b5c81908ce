"""Redis Sentinel: ``redis+sentinel://`` / ``rediss+sentinel://`` URLs and their clients.

``redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB][?options]`` names the
sentinels (port 26379 when left out) and the service whose current primary nbqueue talks
to. The user and password are those of the data nodes (the primary and its replicas);
sentinels protected on their own take ``?sentinel_username=...&sentinel_password=...``.
``rediss+sentinel://`` speaks TLS to the sentinels and to the primary, with the same
``ssl_*`` query options as a ``rediss://`` URL (``ssl_cert_reqs``, ``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``).

The clients are redis-py's (:class:`redis.sentinel.Sentinel` and its asyncio twin): each
new connection asks the sentinels where the primary is, and a connection that finds its
server gone, or demoted (``READONLY``), reconnects through them. So producers, workers of
every mode, schedulers and scrapes follow a failover without a restart: calls made while
the sentinels have not yet promoted a replica fail with
:class:`~nbqueue.errors.RedisUnavailableError` like any outage, and the worker engine
retries them as it does after a network cut.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import InvalidOptionError, RedisUnavailableError, SentinelServiceError

__all__ = ["SENTINEL_SCHEMES", "SentinelSpec", "parse_sentinel_url"]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379
_SSL_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                "ssl_check_hostname")
_OPTIONS = ("sentinel_username", "sentinel_password", *_SSL_OPTIONS)


@dataclass(frozen=True)
class SentinelSpec:
    """A parsed Sentinel URL (see the module docstring)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    ssl: tuple[tuple[str, Any], ...] = ()

    @property
    def where(self) -> str:
        """``service 'mymaster' via sentinels h1:26379, h2:26379`` (no secrets)."""
        hosts = ", ".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"service {self.service!r} via sentinels {hosts}"

    def data_kwargs(self) -> dict[str, Any]:
        """Options of the connections to the primary (credentials, db, TLS)."""
        kw: dict[str, Any] = {"db": self.db}
        if self.username:
            kw["username"] = self.username
        if self.password:
            kw["password"] = self.password
        if self.tls:
            kw["ssl"] = True
            kw.update(self.ssl)
        return kw

    def sentinel_kwargs(self, base: dict[str, Any], *, asyncio: bool = False
                        ) -> dict[str, Any]:
        """Options of the connections to the sentinels: ``base``'s timeouts, the sentinel
        credentials, TLS like the data nodes', no retries (discovery moves on to the next
        sentinel by itself)."""
        kw = {k: v for k, v in base.items() if k.startswith("socket_")}
        kw["decode_responses"] = True
        kw["retry"] = (redis.asyncio.retry.Retry(NoBackoff(), 0) if asyncio
                       else Retry(NoBackoff(), 0))
        if self.sentinel_username:
            kw["username"] = self.sentinel_username
        if self.sentinel_password:
            kw["password"] = self.sentinel_password
        if self.tls:
            kw["ssl"] = True
            kw.update(self.ssl)
        return kw


def is_sentinel_url(url: str) -> bool:
    return str(url).split("://", 1)[0].lower() in SENTINEL_SCHEMES if "://" in str(url) \
        else False


def _bad(url_masked: str, why: str) -> InvalidOptionError:
    return InvalidOptionError(
        f"{url_masked!r} is not a valid Sentinel URL: {why}. Expected "
        "redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB] "
        "(rediss+sentinel:// for TLS)")


def parse_sentinel_url(url: str, masked: str) -> SentinelSpec:
    """Parse a ``redis+sentinel://`` URL; ``masked`` (the URL without its password) is what
    error messages show. Raises :class:`~nbqueue.errors.InvalidOptionError`."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _bad(masked, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise _bad(masked, f"unknown scheme {parts.scheme!r}")
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if not item:
            raise _bad(masked, "no sentinel host:port given" if not hostlist
                       else "an empty host in the sentinel list")
        if item.startswith("["):  # [::1]:26379
            host, _, rest = item[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            port = int(port_text) if port_text else DEFAULT_SENTINEL_PORT
        except ValueError:
            raise _bad(masked, f"port {port_text!r} of sentinel {item!r} is not a number") \
                from None
        if not host or not 0 < port < 65536:
            raise _bad(masked, f"sentinel {item!r} needs a host and a port 1-65535")
        sentinels.append((host, port))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path:
        raise _bad(masked, "the service name is missing (the path: /mymaster)")
    if len(path) > 2:
        raise _bad(masked, f"the path {parts.path!r} has more than /SERVICE/DB")
    db = 0
    if len(path) == 2:
        if not path[1].isascii() or not path[1].isdigit():
            raise _bad(masked, f"the database {path[1]!r} is not a number")
        db = int(path[1])
    options: dict[str, str] = {}
    for key, text in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise _bad(masked, f"unknown option {key!r} (known: {', '.join(_OPTIONS)})")
        options[key] = text
    ssl: list[tuple[str, Any]] = []
    for key in _SSL_OPTIONS:
        if key in options:
            value: Any = options[key]
            if key == "ssl_check_hostname":
                value = value.lower() in ("1", "true", "yes", "on")
            ssl.append((key, value))
    if ssl and scheme != "rediss+sentinel":
        raise _bad(masked, "ssl_* options need rediss+sentinel://")
    return SentinelSpec(tuple(sentinels), path[0], db, scheme == "rediss+sentinel",
                        username, password, options.get("sentinel_username") or None,
                        options.get("sentinel_password") or None, tuple(ssl))


class SentinelRedis(redis.Redis):
    """The primary's sync client; closing it also closes its sentinel clients."""

    _nbq_sentinel: redis.sentinel.Sentinel | None = None

    def close(self) -> None:
        super().close()
        if self._nbq_sentinel is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                self._nbq_sentinel.close()


class AsyncSentinelRedis(redis.asyncio.Redis):
    """The primary's asyncio client; closing it also closes its sentinel clients."""

    _nbq_sentinel: redis.asyncio.sentinel.Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self._nbq_sentinel is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await self._nbq_sentinel.aclose()


def sync_client(spec: SentinelSpec, kwargs: dict[str, Any]) -> SentinelRedis:
    """A sync client of the service's current primary (``kwargs``: nbqueue's client
    options)."""
    manager = redis.sentinel.Sentinel(list(spec.sentinels),
                                      sentinel_kwargs=spec.sentinel_kwargs(kwargs))
    client = manager.master_for(spec.service, redis_class=SentinelRedis,
                                **kwargs, **spec.data_kwargs())
    client._nbq_sentinel = manager
    return client


def async_client(spec: SentinelSpec, kwargs: dict[str, Any]) -> AsyncSentinelRedis:
    """An asyncio client of the service's current primary."""
    manager = redis.asyncio.sentinel.Sentinel(
        list(spec.sentinels), sentinel_kwargs=spec.sentinel_kwargs(kwargs, asyncio=True))
    client = manager.master_for(spec.service, redis_class=AsyncSentinelRedis,
                                **kwargs, **spec.data_kwargs())
    client._nbq_sentinel = manager
    return client


def check(spec: SentinelSpec, masked: str, kwargs: dict[str, Any]) -> None:
    """Ask every sentinel about the service; raise a clear error when none answers
    (:class:`RedisUnavailableError`) or none knows the service
    (:class:`SentinelServiceError`, listing the services they know)."""
    skw = spec.sentinel_kwargs(kwargs)
    errors: list[str] = []
    known: set[str] = set()
    down: list[str] = []
    for host, port in spec.sentinels:
        client = redis.Redis(host, port, **skw)
        try:
            masters: dict[str, Any] = dict(client.sentinel_masters())  # type: ignore[arg-type]
        except (redis.RedisError, OSError) as exc:
            errors.append(f"{host}:{port}: {exc}")
            continue
        finally:
            client.close()
        known.update(masters)
        state = masters.get(spec.service)
        if state is not None:
            if state.get("is_master") and not state.get("is_sdown") \
                    and not state.get("is_odown"):
                return
            down.append(f"{host}:{port} sees {state.get('ip')}:{state.get('port')} down")
    if not known and errors:
        raise RedisUnavailableError(
            f"Redis is unavailable at {masked}: no sentinel answered ({'; '.join(errors)})")
    if spec.service not in known:
        names = ", ".join(sorted(known)) or "none"
        raise SentinelServiceError(
            f"Redis is unavailable at {masked}: the sentinels know no service named "
            f"{spec.service!r} (they know: {names}); fix the name in the URL path")
    raise RedisUnavailableError(
        f"Redis is unavailable at {masked}: no primary of {spec.service!r} is up now "
        f"({'; '.join(down + errors)}); a failover may be under way")
