"""The operations that control a queue and its jobs: pause, drain, clean, retry, remove,
obliterate, cancel, promote, priority, data, deduplication, rate limit and global
concurrency.

See ``nbqueue.ops`` (the package) for the map of the operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import flows, serialization
from ..dataplane import sweep
from ..errors import (
    InvalidOptionError,
    JobActiveError,
    JobNotFoundError,
    JobStateError,
    QueueBusyError,
)
from ..keys import registry_key
from ..options import RateLimit, check_job_id, parse_priority, validate_global_concurrency
from ..protocol import Batch, Call, Op
from ..records import reply_text
from ..serialization import encodable, utf8_safe, wire_text
from ..types import JobState
from .base import REGISTER_EVERY_S
from .jobs import JobOps

#: Jobs per call of the scripts that sweep a whole set (drain, obliterate, retry_failed,
#: clean): the operation repeats the call until done, so that no call keeps Redis busy
#: (BUSY to every other client past ~5 s) for more than a few tens of ms whatever the size.
#: Measured (bench/README, docs/reliability.md): ~3 us per deleted job on 2 cores.
SWEEP_CHUNK_JOBS = 1000


class ControlOps(JobOps):
    """Control of the queue and of its jobs (on top of adding and reading them: a drain or
    a remove runs the dependency resolver, ``flows``, which reads and adds jobs)."""

    # -- control -----------------------------------------------------------------------
    def set_rate_limit(self, limit: RateLimit | None) -> Op[None]:
        yield from self.ensure_registered()
        if limit is None:
            yield Call.cmd("HDEL", self.keys.meta, "rl_max", "rl_dur")
        else:
            yield Call.cmd("HSET", self.keys.meta, "rl_max", limit.max, "rl_dur", limit.duration)

    def rate_limit(self) -> Op[RateLimit | None]:
        r = yield Call.cmd("HMGET", self.keys.meta, "rl_max", "rl_dur")
        return RateLimit(int(r[0]), int(r[1])) if r[0] and r[1] else None

    def set_paused(self, paused: bool) -> Op[None]:
        yield self.call("set_paused", "1" if paused else "0")

    def drain(self, delayed: bool = False) -> Op[int]:
        """Remove the waiting (and delayed) jobs, :data:`SWEEP_CHUNK_JOBS` per script call.

        Not atomic as a whole (each call is): jobs added while it runs may stay or go."""
        total = 0
        while True:
            removed, done = yield self.call("drain", "1" if delayed else "0",
                                            SWEEP_CHUNK_JOBS, total)
            total += int(removed)
            if int(done):
                break
        yield from sweep(self.keys)  # artifact files of the removed jobs (fsspec stores)
        return total

    def clean(self, grace_ms: int, limit: int, state: str) -> Op[int]:
        state = str(state.value if isinstance(state, JobState) else state)
        if state == "wait":
            state = "waiting"
        if state not in ("completed", "failed", "waiting", "delayed"):
            raise InvalidOptionError(
                f"clean takes state completed, failed, waiting or delayed, not {state!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionError(f"clean limit must be an int >= 0 (0 = all): {limit!r}")
        total, rank = 0, 0
        while True:
            budget = SWEEP_CHUNK_JOBS if not limit else min(SWEEP_CHUNK_JOBS, limit - total)
            removed, rank = yield self.call("clean", state, grace_ms, budget,
                                            SWEEP_CHUNK_JOBS, rank)
            total += len(removed)
            if int(rank) < 0 or (limit and total >= limit):
                break
        yield from sweep(self.keys)  # artifact files of the removed jobs (fsspec stores)
        return total

    def retry_failed(self, limit: int = 0, job_id: str = "") -> Op[int]:
        """Failed jobs (``limit`` of them, 0: all there are now; or the one ``job_id``) back
        to wait; a dependent re-armed (flows.retry: never partial). At most
        :data:`SWEEP_CHUNK_JOBS` per script call; a job that fails again while this runs is
        not moved twice: at most as many as were failed at the start."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionError(f"retry_failed limit must be an int >= 0 (0 = all): "
                                     f"{limit!r}")
        if job_id:
            return (yield from flows.retry(self, 0, job_id))
        target = int((yield Call.cmd("ZCARD", self.keys.failed)))
        if limit:
            target = min(target, limit)
        moved = 0
        while moved < target:
            n = yield from flows.retry(self, min(SWEEP_CHUNK_JOBS, target - moved), "")
            if n == 0:
                break
            moved += n
        return moved

    def remove(self, job_id: str) -> Op[bool]:
        r = int((yield self.call("remove", str(job_id))))
        if r > 0:
            yield from sweep(self.keys)  # its artifact files (fsspec stores)
        if r < 0:
            raise JobActiveError(f"job {job_id} is active (locked by a worker) and cannot be "
                               "removed now; remove it once it has finished")
        if r == 2:  # jobs depended on it: deliver their "gone" notifications now
            yield from flows.resolve(self)
        return r >= 1

    def obliterate(self, force: bool = False) -> Op[int]:
        r = 0
        while True:  # SWEEP_CHUNK_JOBS per script call; the first call pauses the queue
            n, done = yield self.call("obliterate", "1" if force else "0", SWEEP_CHUNK_JOBS)
            if int(n) < 0:
                raise QueueBusyError(f"queue {self.name!r} has active jobs; stop its workers "
                                     "or pass force=True" + (
                                         f" ({r} jobs were deleted before a job became "
                                         "active; the queue is paused)" if r else ""))
            r += int(n)
            if int(done):
                break
        yield from sweep(self.keys)  # artifact files of the deleted jobs (fsspec stores)
        # Out of the registry too (another slot on a cluster, hence a second call). A
        # process still adding to this queue registers it again within a minute.
        yield Call(command=("SREM", registry_key(self.keys.prefix), self.name), optional=True)
        self.registered_at = -REGISTER_EVERY_S
        return r

    # -- job control (BullMQ parity) ----------------------------------------------------
    def promote(self, job_id: str) -> Op[None]:
        """A delayed job joins its priority level now; anything else is an error."""
        r = yield self.call("promote", check_job_id(job_id))
        self._check_control(r, job_id, "promote", "it is not delayed")

    def change_priority(self, job_id: str, priority: Any, lifo: bool = False) -> Op[str]:
        """New priority of a waiting or delayed job; returns its state."""
        prio = parse_priority(priority)
        if not isinstance(lifo, bool):
            raise InvalidOptionError(f"lifo must be a bool: {lifo!r}")
        r = yield self.call("change_priority", check_job_id(job_id), prio, "1" if lifo else "0")
        return self._check_control(r, job_id, "change the priority of",
                                   "only waiting and delayed jobs can be re-prioritised")

    def update_data(self, job_id: str, data: Any) -> Op[str]:
        """Replace the data of a job that has not finished; returns its state."""
        text = serialization.encode_data(data, self.max_payload_bytes)
        if not text.isascii() and not encodable(text):
            text, _ = utf8_safe(text, data, "")
        r = yield self.call("update_data", check_job_id(job_id), text)
        return self._check_control(r, job_id, "update the data of",
                                   "its data is final once it has finished")

    def _check_control(self, reply: Any, job_id: str, action: str, why: str) -> str:
        code = int(reply[0])
        if code == 0:
            raise JobNotFoundError(f"job {job_id} not found in queue {self.name!r}")
        if code < 0:
            raise JobStateError(f"cannot {action} job {job_id} of queue {self.name!r}: it is "
                                f"{reply_text(reply[1])} ({why})")
        return reply_text(reply[1])

    def get_deduplication_job_id(self, dedup_id: str) -> Op[str | None]:
        """The id of the job that deduplication id ``dedup_id`` currently points to."""
        if not isinstance(dedup_id, str):
            raise InvalidOptionError(
                f"deduplication id must be a str, not {type(dedup_id).__name__}")
        key = self.keys.dedup(dedup_id)
        cur, pttl = yield Batch([Call.cmd("GET", key), Call.cmd("PTTL", key)])
        if cur is None:
            return None
        if int(pttl) == -1:  # "until the job finishes": a drained or finished job holds nothing
            state = yield Call.cmd("HGET", self.keys.job(cur), "state")
            if state is None or state in ("completed", "failed"):
                return None
        return str(cur)

    def set_global_concurrency(self, limit: int | None) -> Op[None]:
        if limit is None:
            yield Call.cmd("HDEL", self.keys.meta, "gc")
        else:
            yield Call.cmd("HSET", self.keys.meta, "gc", validate_global_concurrency(limit))

    def global_concurrency(self) -> Op[int | None]:
        r = yield Call.cmd("HGET", self.keys.meta, "gc")
        return int(r) if r else None

    # -- cancel ------------------------------------------------------------------------
    def cancel(self, job_id: str, reason: str = "cancelled") -> Op[bool]:
        """Cancel a job (cancel.lua). True: a waiting/delayed job failed at once, or an
        active one's worker was told to stop it. False: the job had finished already (a
        documented no-op). Unknown ids raise ``JobNotFoundError``."""
        code, state = (yield self.call("cancel", str(job_id), wire_text(str(reason))))
        code = int(code)
        if code == 0:
            raise JobNotFoundError(f"job {job_id} not found in queue {self.name!r}")
        if code == -2:
            raise JobStateError(f"job {job_id} of {self.name!r} is in state {state!r}, "
                                "which cancel does not handle")
        if code == 3:  # jobs depended on it: deliver their notifications now
            yield from flows.resolve(self)
        return code > 0

    def cancel_many(self, ids: Sequence[str], reason: str = "cancelled") -> Op[int]:
        """Cancel several jobs (a batch's ``cancel``): one round trip of cancel.lua calls.
        Finished, unknown or unhandled ones are skipped; returns how many were cancelled or
        told to stop."""
        why = wire_text(str(reason))
        replies = yield Batch([self.call("cancel", str(i), why) for i in ids])
        codes = [int(code) for code, _ in replies]
        if 3 in codes:  # jobs depended on some: deliver their notifications now
            yield from flows.resolve(self)
        return sum(1 for c in codes if c > 0)

    def retry_jobs(self, ids: Sequence[str]) -> Op[int]:
        """Move these failed jobs back to wait (attempts reset; retry_failed.lua each, one
        round trip; a dependent is re-armed, ``flows.after_retry``); jobs not failed are
        skipped. Returns how many moved."""
        replies = yield Batch([self.call("retry_failed", 0, str(i)) for i in ids])
        # re-arms dependents of the jobs (DESIGN "Fan-in is never partial")
        return (yield from flows.after_retry([(self, x) for x in replies]))
