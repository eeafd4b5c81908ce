"""Job options: parsing, validation and the defaults a queue applies."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .backoff import Backoff
from .durations import to_ms
from .errors import InvalidOptionError
from .types import JobPriority

# Retention defaults: bounded, unlike BullMQ's keep-everything default.
DEFAULT_KEEP_COMPLETED = 1000
DEFAULT_KEEP_FAILED = 5000

JOB_OPTION_NAMES = frozenset({
    "priority", "delay", "schedule", "attempts", "backoff", "timeout", "job_id",
    "remove_on_complete", "remove_on_fail", "lifo", "deduplication",
})

#: nbqueue's own fresh ids once a failover labelled them (scripts/includes/ids.lua)
_FRESH_ID_AFTER_FAILOVER = re.compile(r"^[0-9]+-[0-9a-f]{8}$")
_PRIORITY_NAMES = {p.name.lower(): int(p) for p in JobPriority}


def parse_priority(value: object) -> int:
    """1..5, a ``JobPriority``, or its name ("high", "CRITICAL")."""
    if isinstance(value, bool):
        raise InvalidOptionError("priority must be 1..5 or a JobPriority name, not a bool")
    if isinstance(value, int):
        if 1 <= value <= 5:
            return int(value)
        raise InvalidOptionError(
            f"priority must be between 1 (critical) and 5 (background): {value}")
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _PRIORITY_NAMES:
            return _PRIORITY_NAMES[key]
        if key.isascii() and key.isdigit():  # '²'.isdigit() is True, int('²') raises
            return parse_priority(int(key))
        raise InvalidOptionError(
            f"unknown priority {value!r}; use one of {', '.join(_PRIORITY_NAMES)} or 1..5")
    raise InvalidOptionError(f"priority must be an int 1..5 or a name, not {type(value).__name__}")


@dataclass(frozen=True)
class Retention:
    """How many finished jobs to keep (-1 = all) and for how long (ms, 0 = no age limit)."""

    count: int = -1
    age_ms: int = 0

    @classmethod
    def parse(cls, value: object, default_count: int) -> Retention:
        if value is None:
            return cls(count=default_count)
        if value is True:
            return cls(count=0)
        if value is False:
            return cls(count=-1)
        if isinstance(value, int):
            if value < 0:
                raise InvalidOptionError(f"retention count must be >= 0: {value}")
            return cls(count=value)
        if isinstance(value, Mapping):
            unknown = set(value) - {"age", "count"}
            if unknown:
                raise InvalidOptionError(f"unknown retention option(s): {sorted(unknown)}")
            count = value.get("count", -1)
            if isinstance(count, bool) or not isinstance(count, int) or count < -1:
                raise InvalidOptionError(f"retention count must be an int >= 0: {count!r}")
            age = value.get("age")
            # BullMQ's "age" is in seconds; a timedelta or "2h" works as well.
            age_ms = 0
            if age is not None:
                age_ms = (to_ms(age, "retention age") if isinstance(age, str) or hasattr(
                    age, "total_seconds") else to_ms(float(age) * 1000, "retention age"))
            return cls(count=count, age_ms=age_ms)
        raise InvalidOptionError(
            "remove_on_complete/remove_on_fail take True, a count, or {'age': s, 'count': n}")

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "age_ms": self.age_ms}


@dataclass(frozen=True)
class Deduplication:
    """``add(..., deduplication={"id": ..., "ttl": ms, "extend": False, "replace": False})``.

    While the deduplication key of ``id`` lives, adding another job with the same id adds
    nothing and returns the existing job (event ``deduplicated``). With a ``ttl`` the key
    lives that long (throttle); without one it lives until the job finishes (completed or
    failed) or is removed. ``extend`` restarts the ttl on each deduplicated add; ``replace``
    puts the newest data (and options) into the existing job while it is still delayed, and
    restarts its delay: with both, a burst of adds runs one job, with the last data, once
    the adds stop for ``delay`` (debounce).
    """

    id: str
    ttl: int = 0  # ms; 0 = until the job finishes
    extend: bool = False
    replace: bool = False

    @classmethod
    def parse(cls, value: object) -> Deduplication:
        if isinstance(value, Deduplication):
            return value
        if not isinstance(value, Mapping):
            raise InvalidOptionError(
                "deduplication must be a dict like {'id': 'key', 'ttl': 5000}, "
                f"not {type(value).__name__}")
        unknown = set(value) - {"id", "ttl", "extend", "replace"}
        if unknown:
            raise InvalidOptionError(f"unknown deduplication option(s): {sorted(unknown)}; "
                                     "known: extend, id, replace, ttl")
        dd_id = value.get("id")
        if not isinstance(dd_id, str):
            raise InvalidOptionError(
                f"deduplication id must be a str, not {type(dd_id).__name__}")
        if not dd_id or len(dd_id) > 500:
            raise InvalidOptionError("deduplication id must have 1..500 characters")
        ttl = value.get("ttl")
        ttl_ms = 0 if ttl is None else to_ms(ttl, "deduplication ttl", allow_zero=False)
        flags = {}
        for name in ("extend", "replace"):
            flag = value.get(name, False)
            if not isinstance(flag, bool):
                raise InvalidOptionError(f"deduplication {name} must be a bool: {flag!r}")
            flags[name] = flag
        if flags["extend"] and not ttl_ms:
            raise InvalidOptionError("deduplication extend needs a ttl (it restarts the ttl)")
        return cls(dd_id, ttl_ms, flags["extend"], flags["replace"])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "ttl": self.ttl, "extend": self.extend, "replace": self.replace}


@dataclass(frozen=True)
class JobOptions:
    """Validated options of one job; ``to_json`` is what is stored with it."""

    priority: int = int(JobPriority.NORMAL)
    delay: int = 0
    attempts: int = 1
    backoff: Backoff | None = None
    timeout: int | None = None
    job_id: str | None = None
    remove_on_complete: Retention = Retention(count=DEFAULT_KEEP_COMPLETED)
    remove_on_fail: Retention = Retention(count=DEFAULT_KEEP_FAILED)
    lifo: bool = False
    deduplication: Deduplication | None = None
    #: the OpenTelemetry context the job carries from its add to its attempts (nbqueue.otel):
    #: a W3C carrier dict, with "links" (its dependencies' carriers) for a fan-in
    trace: Mapping[str, Any] | None = field(default=None, compare=False)

    def to_json(self) -> str:
        """The stored form; computed once per (immutable) options object."""
        return self._json

    @functools.cached_property
    def _json(self) -> str:
        d: dict[str, Any] = {"attempts": self.attempts}
        if self.backoff:
            d["backoff"] = self.backoff.to_json()
        if self.timeout:
            d["timeout"] = self.timeout
        d["roc"] = self.remove_on_complete.to_json()
        d["rof"] = self.remove_on_fail.to_json()
        if self.lifo:
            d["lifo"] = True
        if self.deduplication is not None:
            d["dd"] = self.deduplication.to_json()
        if self.trace:
            d["tc"] = self.trace
        return json.dumps(d, separators=(",", ":"))

    def ext_json(self) -> str:
        """add.lua's per-job extension argument: '' when no option that needs the script's
        attention (lifo, deduplication) is set, which keeps the plain add path as it was."""
        return self._ext

    @functools.cached_property
    def _ext(self) -> str:
        if not self.lifo and self.deduplication is None:
            return ""
        d: dict[str, Any] = {}
        if self.lifo:
            d["lifo"] = 1
        if self.deduplication is not None:
            dd = self.deduplication
            d["dd"] = [dd.id, dd.ttl, int(dd.extend), int(dd.replace)]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_stored(cls, text: str | None, priority: int = 3) -> JobOptions:
        """Rebuild options from what a job hash holds (tolerates missing or odd fields).

        Cached by (text, priority): a worker sees the same few option strings over and over,
        and this is on its per-job path."""
        key = (text, priority)
        cached = _STORED_CACHE.get(key)
        if cached is None:
            cached = cls._parse_stored(text, priority)
            if len(_STORED_CACHE) > 4096:
                _STORED_CACHE.clear()
            _STORED_CACHE[key] = cached
        return cached

    @classmethod
    def _parse_stored(cls, text: str | None, priority: int) -> JobOptions:
        try:
            d = json.loads(text or "{}")
            if not isinstance(d, dict):
                d = {}
        except ValueError:
            d = {}
        roc, rof = d.get("roc") or {}, d.get("rof") or {}
        dd = d.get("dd")
        dedup = None
        if isinstance(dd, dict) and isinstance(dd.get("id"), str):
            dedup = Deduplication(dd["id"], int(dd.get("ttl") or 0), bool(dd.get("extend")),
                                  bool(dd.get("replace")))
        return cls(
            priority=priority,
            attempts=max(1, int(d.get("attempts", 1))),
            backoff=Backoff.parse(d["backoff"]) if d.get("backoff") else None,
            timeout=int(d["timeout"]) if d.get("timeout") else None,
            remove_on_complete=Retention(int(roc.get("count", DEFAULT_KEEP_COMPLETED)),
                                         int(roc.get("age_ms", 0))),
            remove_on_fail=Retention(int(rof.get("count", DEFAULT_KEEP_FAILED)),
                                     int(rof.get("age_ms", 0))),
            lifo=bool(d.get("lifo")), deduplication=dedup,
            trace=d["tc"] if isinstance(d.get("tc"), dict) else None,
        )

    def public(self) -> dict[str, Any]:
        """A plain-dict view for users (status, DataFrames)."""
        return {"priority": self.priority, "delay": self.delay, "attempts": self.attempts,
                "backoff": self.backoff.to_json() if self.backoff else None,
                "timeout": self.timeout, "job_id": self.job_id, "lifo": self.lifo,
                "deduplication": (self.deduplication.to_json()
                                  if self.deduplication is not None else None)}


_STORED_CACHE: dict[tuple[str | None, int], JobOptions] = {}


def validate_job_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidOptionError(f"job_id must be a str, not {type(value).__name__}")
    if not value or len(value) > 500:
        raise InvalidOptionError("job_id must have 1..500 characters")
    if value.isascii() and value.isdigit():
        # Plain integers are nbqueue's own ids: a custom one could collide with them later.
        raise InvalidOptionError(f"job_id {value!r} is all digits; custom ids need a non-digit")
    if _FRESH_ID_AFTER_FAILOVER.match(value):
        # the form of nbqueue's own ids after a failover (scripts/includes/ids.lua)
        raise InvalidOptionError(f"job_id {value!r} has the form of nbqueue's own ids "
                                 "(digits-8 hex digits); custom ids need another form")
    return value


def merge_options(defaults: JobOptions, opts: Mapping[str, Any]) -> JobOptions:
    """Apply per-job keyword options over the queue's defaults; ``None`` means "default"."""
    unknown = set(opts) - JOB_OPTION_NAMES
    if unknown:
        raise InvalidOptionError(
            f"unknown job option(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(JOB_OPTION_NAMES))}")
    changes: dict[str, Any] = {}
    if not opts or all(v is None for v in opts.values()):
        return defaults  # the common case: nothing to merge (no copy, cached JSON)
    for name, value in opts.items():
        if value is None:
            continue
        if name == "priority":
            changes["priority"] = parse_priority(value)
        elif name == "delay":
            changes["delay"] = to_ms(value, "delay")
        elif name == "schedule":
            if not isinstance(value, Mapping):
                raise InvalidOptionError("schedule must be a dict like {'delay': 300000}")
            extra = set(value) - {"delay"}
            if extra:
                raise InvalidOptionError(
                    f"unknown schedule option(s): {sorted(extra)}; for cron use "
                    "schedule_recurring_job()")
            if value.get("delay") is not None:
                changes["delay"] = to_ms(value["delay"], "schedule delay")
        elif name == "attempts":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidOptionError(f"attempts must be an int >= 1: {value!r}")
            changes["attempts"] = value
        elif name == "backoff":
            changes["backoff"] = Backoff.parse(value)
        elif name == "timeout":
            changes["timeout"] = to_ms(value, "timeout", allow_zero=False)
        elif name == "job_id":
            changes["job_id"] = validate_job_id(value)
        elif name == "remove_on_complete":
            changes["remove_on_complete"] = Retention.parse(value, DEFAULT_KEEP_COMPLETED)
        elif name == "remove_on_fail":
            changes["remove_on_fail"] = Retention.parse(value, DEFAULT_KEEP_FAILED)
        elif name == "lifo":
            if not isinstance(value, bool):
                raise InvalidOptionError(f"lifo must be a bool: {value!r}")
            changes["lifo"] = value
        elif name == "deduplication":
            changes["deduplication"] = Deduplication.parse(value)
    return replace(defaults, **changes)


def default_options(opts: Mapping[str, Any] | None) -> JobOptions:
    """A queue's ``default_job_options`` (job_id is per job, so not allowed here)."""
    opts = dict(opts or {})
    for per_job in ("job_id", "deduplication"):
        if per_job in opts:
            raise InvalidOptionError(f"{per_job} cannot be a default job option")
    return merge_options(JobOptions(), opts)


@dataclass
class RateLimit:
    """A queue's rate limit: at most ``max`` jobs started per ``duration`` ms."""

    max: int
    duration: int

    @classmethod
    def parse(cls, value: object) -> RateLimit | None:
        if value is None:
            return None
        if isinstance(value, RateLimit):
            return value
        if not isinstance(value, Mapping) or set(value) - {"max", "duration"}:
            raise InvalidOptionError("rate_limiter must be a dict {'max': n, 'duration': ms}")
        n = value.get("max")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidOptionError(f"rate_limiter max must be an int >= 1: {n!r}")
        return cls(n, to_ms(value.get("duration", 1000), "rate_limiter duration",
                            allow_zero=False))


def validate_global_concurrency(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidOptionError(f"global_concurrency must be an int >= 1 (or None for no "
                                 f"limit): {limit!r}")
    return limit


def check_job_id(job_id: object) -> str:
    """A job id given to a control operation: a non-empty str (an int is made one)."""
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        return str(job_id)
    if not isinstance(job_id, str) or not job_id:
        raise InvalidOptionError(f"job id must be a non-empty str: {job_id!r}")
    return job_id
