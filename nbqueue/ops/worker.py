"""The operations of a worker: fetch, park, finish, locks, stalled jobs, the registry.

See ``nbqueue.ops`` (the package) for the map of the operations; ``nbqueue.worker``
runs them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..liveness import read_workers
from ..protocol import BLOCK_REPLY_MARGIN_S, Batch, Call, Op
from ..records import (
    Fetched,
    Outcome,
    OutcomeKind,
    parse_fetch_safe,
    reply_text,
)
from ..serialization import wire_text
from ..types import WorkerInfo
from .base import OpsBase

#: A worker's fetch and finish must be answered within this (seconds), else their connection
#: is presumed dead (half-open) and closed, as a parked call's block time + margin: a reply
#: lost that way is recovered by ``reclaim`` (jobs it locked) and by sending the finish
#: again (finish.lua is guarded by each job's lock: a finish applied twice is refused).
REPLY_TIMEOUT_S = 5.0 + BLOCK_REPLY_MARGIN_S


class WorkerOps(OpsBase):
    """What a worker engine sends: every per-job step of a drain is one of these."""

    #: fetched jobs keep their data as JSON text until used (``JobRecord.loaded``): set by
    #: a worker's engine, whose job threads or children decode it, not its loop
    lazy_data = False

    # -- worker registry ---------------------------------------------------------------
    def heartbeat(self, worker_id: str, ttl_ms: int, info: Mapping[str, Any],
                  active: int) -> Op[None]:
        """Register or renew a worker (one call per worker per heartbeat interval)."""
        # the queue's name rides along (registry of queue names): scrapes see its workers
        yield from self.registering(self.call(
            "heartbeat", worker_id, ttl_ms, json.dumps(dict(info), separators=(",", ":")),
            active, "0"))

    def deregister(self, worker_id: str) -> Op[None]:
        yield self.call("heartbeat", worker_id, 1, "{}", 0, "1")

    def get_workers(self) -> Op[list[WorkerInfo]]:
        """The workers of this queue that heartbeated within their ttl, oldest first."""
        return (yield from read_workers(self.keys))  # nbqueue.liveness

    # -- worker side -------------------------------------------------------------------
    def fetch(self, want: int, token: str, lock_ms: int, unpark: bool = False) -> Op[Fetched]:
        return self._fetched((yield replace(self.call(
            "fetch", want, token, lock_ms, 0, int(unpark)), reply_timeout=REPLY_TIMEOUT_S)))

    def _fetched(self, reply: list[Any]) -> Fetched:
        return parse_fetch_safe(reply, self.lazy_data)

    def handoff_key(self, token: str) -> str:
        return self.keys.handoff(token)

    def block_and_fetch(self, wake_key: str, secs: float, want: int, token: str,
                        lock_ms: int) -> Op[tuple[Fetched, bool]]:
        """Fetch, and if there was nothing, park: wait (BLPOP) for a job handed over by a
        producer (add.lua), a marker (other new work), ``wake_key`` or the timeout. One
        pipeline; returns what was fetched or handed over, and whether the worker may still
        be registered as idle (then its next fetch or finish must unpark)."""
        replies = yield Batch([
            self.call("fetch", want, token, lock_ms, max(1, round(secs * 1000)), 0),
            self._blpop(wake_key, secs, token)], reply_timeout=secs + BLOCK_REPLY_MARGIN_S)
        fetched = self._fetched(replies[0])
        parked = self._handed(replies[1], token, fetched)
        return fetched, parked

    def block(self, wake_key: str, secs: float, token: str) -> Op[tuple[Fetched, bool]]:
        """The BLPOP of a park whose registration a finish made (``finish(park_ms=)``): the
        jobs handed over, and whether the worker may still be registered (as above)."""
        popped = yield replace(self._blpop(wake_key, secs, token),
                               reply_timeout=secs + BLOCK_REPLY_MARGIN_S)
        fetched = self._fetched([-1, 0])  # nothing yet
        return fetched, self._handed(popped, token, fetched)

    def _blpop(self, wake_key: str, secs: float, token: str) -> Call:
        return Call.cmd("BLPOP", self.handoff_key(token), self.keys.marker, wake_key,
                        round(secs, 3))

    def _handed(self, popped: Any, token: str, fetched: Fetched) -> bool:
        """Add to ``fetched`` the job a BLPOP popped from our hand-off list (its fields as in
        a fetch reply, add.lua); True unless it was one: we may still be registered."""
        if popped and popped[0] == self.handoff_key(token) and popped[1] != "0":
            try:
                fields = json.loads(popped[1])
            except ValueError:
                fields = []
            handed = self._fetched([-1, 0, *fields])
            fetched.jobs.extend(handed.jobs)
            fetched.corrupt.extend(handed.corrupt)
            return False
        return True

    def finish(self, outcomes: Sequence[Outcome], stats: Mapping[str, float], want: int,
               token: str, lock_ms: int, unpark: bool = False,
               park_ms: int = 0) -> Op[tuple[list[bool], Fetched]]:
        """Record outcomes and counters, fetch up to ``want`` jobs; ``park_ms`` > 0: register
        as idle if nothing came (the BLPOP of ``block`` follows: finish.lua)."""
        args: list[Any] = [want, token, lock_ms, int(unpark), park_ms, len(stats)]
        for field, inc in stats.items():
            args += [field, inc]
        for o in outcomes:
            keep = (o.job.opts.remove_on_complete if o.kind is OutcomeKind.COMPLETED
                    else o.job.opts.remove_on_fail)
            atm = o.job.attempts_made + 1 if o.attempts_made is None else o.attempts_made
            value, error_type = o.value, o.error_type  # ASCII (most): no call per job
            args += [o.job.id, o.job.lock or "", o.kind._value_,
                     value if value.isascii() else wire_text(value),
                     error_type if error_type.isascii() else wire_text(error_type),
                     o.retry_delay, atm, keep.count, keep.age_ms,
                     wire_text(o.stacktrace) if o.stacktrace else ""]
        reply = yield replace(self.call("finish", *args), reply_timeout=REPLY_TIMEOUT_S)
        n = len(outcomes)
        fetched = self._fetched(reply[n:])
        # status 2: done, and jobs that depend on it were notified (a resolver should run)
        fetched.notify = 2 in reply[:n]
        # status -1: refused, and its job freed for a sweep (nobody held it): sweep now
        fetched.sweep = -1 in reply[:n]
        return [int(x) > 0 for x in reply[:n]], fetched

    def reclaim(self, token: str, held: Sequence[str]) -> Op[list[str]]:
        """After a dead connection: give back the active jobs locked by ``token`` that the
        worker does not hold (``held``): replies it never read. Returns their ids."""
        return [str(i) for i in (yield self.call("reclaim", token, *held))]

    def extend_locks(self, locks: Mapping[str, str], lock_ms: int) -> Op[list[str]]:
        args: list[Any] = [lock_ms]
        for job_id, lock in locks.items():
            args += [job_id, lock]
        return list((yield self.call("extend_locks", *args)))

    def check_stalled(self, max_stalled: int, interval_ms: int, dead_letter: bool = True,
                      ) -> Op[tuple[list[str], list[str]]]:
        """The stalled sweep: (ids back to wait, ids failed). Jobs that depend on a job that
        failed here hear of it at once (flows.resolve), as after a finish."""
        back, failed, notified = yield self.call("stalled", max_stalled, interval_ms)
        if int(notified):
            from ..flows import resolve

            yield from resolve(self, dead_letter)  # type: ignore[arg-type]
        return list(back), list(failed)

    # -- a worker's own lists: its wake key, its cancel list --------------------------------
    def leave(self, token: str, lock_ms: int, blocked: bool) -> Op[Fetched]:
        """A stopping worker leaves the idle registry, takes the jobs handed to it, and
        (``blocked``) ends its own pending BLPOP: one call that works on a full Redis."""
        return self._fetched((yield self.call("leave", token, lock_ms, int(blocked))))

    def clear_wake(self, wake_key: str) -> Op[None]:
        yield Call.cmd("DEL", wake_key)

    def next_cancel(self, token: str, timeout_s: float) -> Op[str | None]:
        """The id of the next active job of worker ``token`` whose cancel was requested
        (cancel.lua pushes it), waiting up to ``timeout_s`` (BLPOP: no polling)."""
        popped = yield Call(command=("BLPOP", self.keys.cancel_list(token), timeout_s),
                            reply_timeout=timeout_s + BLOCK_REPLY_MARGIN_S)  # half-open: 8 s
        return reply_text(popped[1]) if popped else None
