"""Redis key names of a queue. All share the ``{name}`` hash tag: one queue, one slot."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .errors import InvalidOptionError

DEFAULT_PREFIX = "nbq"
DEAD_LETTER_QUEUE = "dead_letter"  # where workers record terminal failures
MAX_NAME_LEN = 200


def registry_key(prefix: str = DEFAULT_PREFIX) -> str:
    """The SET of queue names (``nbq:queues``) that scrapes and ``nbqueue stats`` read.

    It is the one key outside every queue's ``{name}`` slot: on Redis Cluster it lives in
    another slot, so no queue script can write it. Clients add a queue's name from Python,
    once per queue object, in the same pipeline as its first add (see ``QueueOps``)."""
    return f"{prefix}:queues"


def validate_queue_name(name: object) -> str:
    """Queue names are non-empty strings without braces (they would break the hash tag),
    whitespace or lone surrogates (they cannot be encoded for Redis)."""
    if isinstance(name, enum.Enum):  # QueueName members
        name = name.value
    if not isinstance(name, str):
        raise TypeError(f"queue name must be a str, not {type(name).__name__}")
    name = str(name)
    if not name or len(name) > MAX_NAME_LEN:
        raise InvalidOptionError(f"queue name must have 1..{MAX_NAME_LEN} characters: {name!r}")
    if any(c in name for c in "{}") or any(c.isspace() for c in name):
        raise InvalidOptionError(f"queue name may not contain braces or whitespace: {name!r}")
    if not name.isascii():
        try:  # a lone surrogate ('\ud800', or an undecodable byte of a command line)
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidOptionError(
                f"queue name must be valid Unicode text (it holds a lone surrogate, e.g. from "
                f"an undecodable byte): {name!r}") from None
    return name


@dataclass(frozen=True)
class QueueKeys:
    """Every key of queue ``name``; ``script_keys`` is the KEYS list all scripts take."""

    name: str
    prefix: str = DEFAULT_PREFIX
    base: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_queue_name(self.name))
        object.__setattr__(self, "base", f"{self.prefix}:{{{self.name}}}:")

    @property
    def wait(self) -> str:
        return self.base + "wait"

    @property
    def active(self) -> str:
        return self.base + "active"

    @property
    def delayed(self) -> str:
        return self.base + "delayed"

    @property
    def completed(self) -> str:
        return self.base + "completed"

    @property
    def failed(self) -> str:
        return self.base + "failed"

    @property
    def meta(self) -> str:
        return self.base + "meta"

    @property
    def events(self) -> str:
        return self.base + "events"

    @property
    def marker(self) -> str:
        return self.base + "marker"

    @property
    def stats(self) -> str:
        return self.base + "stats"

    @property
    def waiting_children(self) -> str:
        """ZSET of jobs waiting for their dependencies (score: next re-check ms)."""
        return self.base + "waiting-children"

    @property
    def notify(self) -> str:
        """ZSET of dependency-end notifications still to deliver (see ``nbqueue.flows``)."""
        return self.base + "notify"

    def deps(self, job_id: str) -> str:
        """HASH of a waiting job's dependencies ("queue id" -> p<seq> | c<rv> | f.. | m..)."""
        return self.base + "deps:" + job_id

    @property
    def job_prefix(self) -> str:
        return self.base + "job:"

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def dedup(self, dedup_id: str) -> str:
        """The deduplication key of ``dedup_id`` (value: the id of the job it points to)."""
        return f"{self.base}de:{dedup_id}"

    @property
    def workers(self) -> str:
        """The worker registry: ZSET worker id -> registration expiry (server ms)."""
        return self.base + "workers"

    def worker(self, worker_id: str) -> str:
        """One registered worker's HASH (info, started, hb, active); expires with it."""
        return f"{self.base}worker:{worker_id}"
    def logs(self, job_id: str) -> str:
        """A job's log LIST (job.log, captured output); deleted with the job (common.lua)."""
        return f"{self.base}logs:{job_id}"

    def cancel_list(self, token: str) -> str:
        """The LIST a worker blocks on for cancel requests of its jobs (cancel.lua)."""
        return f"{self.base}cancel:{token}"

    def wake(self, token: str) -> str:
        """The list a worker's idle BLPOP also watches, so a stop can wake it."""
        return f"{self.base}wake:{token}"

    def handoff(self, token: str) -> str:
        """The list a parked worker BLPOPs: jobs handed over by ``add.lua`` land here."""
        return f"{self.base}h:{token}"

    def art(self, job_id: str) -> str:
        """A job's artifacts (``nbqueue.artifacts``): HASH sha256 -> Arrow bytes (the Redis
        store) or ``x:<url>`` -> sha256 (a file of an fsspec store); deleted with the job."""
        return f"{self.base}art:{job_id}"

    def stage(self, nonce: str) -> str:
        """Artifacts written ahead of their job's add (ttl); add.lua renames it to ``art``."""
        return f"{self.base}stage:{nonce}"

    @property
    def artgc(self) -> str:
        """SET of artifact file URLs whose jobs are gone: deleted by ``dataplane.sweep``."""
        return self.base + "artgc"

    def batch(self, name: str) -> str:
        """A named batch's member job ids, in input order (LIST; ``Queue.map(name=)``)."""
        return f"{self.base}batch:{name}"

    @property
    def batches(self) -> str:
        """ZSET of the queue's named batches (name -> last map ms)."""
        return self.base + "batches"

    @property
    def schedulers(self) -> str:
        """The ZSET of the queue's job schedulers (see ``nbqueue.scheduler``)."""
        return self.base + "schedulers"

    @property
    def scheduler_prefix(self) -> str:
        """Prefix of one job scheduler's HASH (``scheduler(id)``)."""
        return self.base + "scheduler:"

    def scheduler(self, scheduler_id: str) -> str:
        return self.scheduler_prefix + scheduler_id

    def minute(self, minute: int) -> str:
        """The per-minute history hash (see finish.lua)."""
        return f"{self.stats}:m:{minute}"

    @property
    def script_keys(self) -> tuple[str, ...]:
        """The KEYS of every script: the prefix (the scripts build the key names from it)."""
        return (self.base,)

    def state_set(self, state: str) -> str:
        """The sorted set that holds jobs of ``state``."""
        sets = {"waiting": self.wait, "paused": self.wait, "active": self.active,
                "delayed": self.delayed, "completed": self.completed, "failed": self.failed,
                "waiting-children": self.waiting_children}
        try:
            return sets[state]
        except KeyError:
            raise InvalidOptionError(
                f"unknown job state {state!r}; use one of {', '.join(sets)}") from None

