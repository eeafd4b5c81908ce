"""Job dependencies (``add(..., depends_on=[...])``): a job that waits for other jobs.

The protocol works across queues and on Redis Cluster, where each queue is its own hash
slot and no script can touch two queues. Every step is one script in ONE slot, and every
step is idempotent, so a crash between two steps is recovered by running them again:

1. ``add_dependent.lua`` (the parent's slot): the job is stored in state
   ``waiting-children`` with a ``deps:<id>`` hash of its dependencies (each pending, with
   the sequence number the dependency had) and a re-check time in ``waiting-children``.
2. ``dep_register.lua`` (each dependency queue's slot): the parent is recorded on each
   dependency (job field ``par``); a dependency that has ended already (or is gone, or
   whose id now names another job) gets its notification queued at once.
3. A dependency's end (``finish.lua``; ``remove.lua`` for a removed one) queues a
   notification ``[parent queue, parent id, queue, id, kind, value, generation]`` in ITS
   OWN slot (ZSET ``notify``), in the same script that ends it. The generation names the
   parent's arming (its sequence number, then a fresh number at each re-arm: see "Retries
   re-arm" below; ``includes/flows.lua``): a notification of an earlier arming is stale
   and delivers nothing.
4. The resolver (``resolve``) reads the notifications of a queue, delivers them to the
   parents' slots (``dep_resolve.lua``: marks the dependency ended, releases the parent to
   ``wait`` when none is pending, or fails it with ``error_type="dependency_failed"``),
   and only then removes them (``ZREM``). A notification delivered twice changes nothing.

Who runs what: ``Queue.add`` runs steps 1, 2 and the resolver for the queues step 2 queued
notifications in. A worker runs the resolver right after a finish that queued
notifications, and ``upkeep`` every ``UPKEEP_S`` seconds: it delivers what a crashed
process left in its queue's ``notify``, and re-runs step 2 for its waiting jobs whose
re-check time (``RECHECK_MS`` after the add, then every ``RECHECK_MS``) has come. Crashes:
- between 1 and 2 (the adding process died): the re-check registers the dependencies;
- between 3 and 4, or inside 4 before the ``ZREM`` (a worker died): the next resolver run
  (any worker of that queue, at its next finish or upkeep) delivers them (again);
- a dependency removed by ``drain``/``clean``/``obliterate``/retention before it ended, or
  failed by the stalled-job sweep: the re-check finds it gone/failed and notifies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import otel
from .errors import InvalidOptionError, JobNotFoundError
from .keys import DEAD_LETTER_QUEUE, validate_queue_name
from .options import JobOptions
from .protocol import Batch, Call, Op

if TYPE_CHECKING:  # typing only: ops imports this module (flows are ops of several queues)
    from .ops.jobs import JobOps as QueueOps
    from .records import JobRecord

log = logging.getLogger("nbqueue.flows")

RECHECK_MS = 30_000  # a waiting job's dependencies are re-registered this often
UPKEEP_S = 5.0  # how often a worker runs ``upkeep`` for its queue
RESOLVE_BATCH = 200  # notifications delivered per round
POLICIES = ("fail", "ignore")


@dataclass(frozen=True)
class Dep:
    queue: str
    id: str

    @property
    def field(self) -> str:
        """The deps hash field: "<queue> <id>" (queue names hold no whitespace)."""
        return f"{self.queue} {self.id}"

    @property
    def ref(self) -> str:
        """The public name, a key of ``dependency_results()``: "<queue>:<id>"."""
        return f"{self.queue}:{self.id}"


def parse_dependencies(depends_on: Any, queue: str) -> list[Dep]:
    """``depends_on`` as a list of (queue, id): jobs, ids (this queue) or (queue, id)."""
    if isinstance(depends_on, (str, bytes)) or not isinstance(depends_on, Iterable) \
            or hasattr(depends_on, "queue_name"):
        depends_on = [depends_on]
    out: dict[Dep, None] = {}
    for dep in depends_on:
        if hasattr(dep, "queue_name") and hasattr(dep, "id"):
            d = Dep(str(dep.queue_name), str(dep.id))
        elif isinstance(dep, tuple) and len(dep) == 2:
            d = Dep(validate_queue_name(dep[0]), _job_id(dep[1]))
        elif isinstance(dep, (str, int)) and not isinstance(dep, bool):
            d = Dep(queue, _job_id(dep))
        else:
            raise InvalidOptionError(
                f"depends_on items are jobs, job ids or (queue_name, job_id) pairs, not "
                f"{type(dep).__name__}: {dep!r}")
        out[d] = None
    if not out:
        raise InvalidOptionError("depends_on is empty (leave it out for a job without "
                                 "dependencies)")
    return list(out)


def _job_id(value: Any) -> str:
    text = str(value)
    if not text or isinstance(value, bool):
        raise InvalidOptionError(f"depends_on: invalid job id {value!r}")
    return text


@dataclass
class Resolved:
    """What resolver runs did: parents released to wait and parents failed."""

    released: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def extend(self, other: Resolved) -> None:
        self.released += other.released
        self.failed += other.failed


def add_dependent(ops: QueueOps, data: Any, opts: Mapping[str, Any], depends_on: Any,
                  policy: str = "fail") -> Op[JobRecord]:
    """``Queue.add(data, depends_on=..., on_dependency_failure=policy, **opts)``."""
    if policy not in POLICIES:
        raise InvalidOptionError(f"on_dependency_failure must be 'fail' or 'ignore': "
                                 f"{policy!r}")
    deps = parse_dependencies(depends_on, ops.name)
    if otel.ENABLED and otel.tracing_add():
        # the dependencies' trace contexts go with the job: its attempts link to them
        stored = yield Batch([Call.cmd("HGET", ops.sibling(d.queue).keys.job(d.id), "opts")
                              for d in deps])
        otel.add_links([JobOptions.from_stored(t).trace for t in stored if t])
    args, record = ops.prepare(data, opts)
    if record.opts.ext_json():
        raise InvalidOptionError("depends_on cannot be combined with lifo or deduplication")
    own = record.opts.job_id
    if own is not None and Dep(ops.name, own) in deps:
        raise InvalidOptionError(f"job {ops.name}:{own} cannot depend on itself (a "
                                 "dependency cycle)")
    # The dependencies must exist: their sequence numbers identify them (a job that re-uses
    # an id later is another job). Jobs can only depend on jobs that exist, so no cycle can
    # form. Read in one round trip (plain commands: fine across slots on a cluster).
    seqs = yield Batch([Call.cmd("HGET", ops.sibling(d.queue).keys.job(d.id), "seq")
                        for d in deps])
    missing = [d.ref for d, s in zip(deps, seqs) if s is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise JobNotFoundError(f"depends_on: no such job {shown} (never added, removed, or "
                               "trimmed by retention); nothing was added")
    flat: list[Any] = []
    for d, s in zip(deps, seqs):
        flat += [d.field, s]
    job_id, name, text, opts_json, prio, delay = args[:6]
    reply, acked = yield from ops.replicated(ops.call(
        "add_dependent", job_id, name, text, opts_json, prio, delay, policy, RECHECK_MS, *flat))
    job_id, existed, generation = str(reply[0]), int(reply[1]), int(reply[2])
    if acked is not None and acked < ops.min_replicas and not existed:
        ops.not_replicated(acked, [job_id])
    if existed:
        found = yield from ops.get_jobs_by_id([job_id])
        if found[0] is not None:
            return found[0]
    record.id = job_id
    yield from register(ops, job_id, [(d, s) for d, s in zip(deps, seqs)], generation)
    found = yield from ops.get_jobs_by_id([job_id])
    return found[0] if found[0] is not None else record


def register(ops: QueueOps, parent_id: str, deps: Sequence[tuple[Dep, str]],
             generation: int = 0) -> Op[Resolved]:
    """Step 2 for one parent of ``ops``'s queue (in its ``generation``: the notifications
    its dependencies queue carry it), then the resolver where it queued."""
    by_queue: dict[str, list[str]] = {}
    for d, seq in deps:
        by_queue.setdefault(d.queue, []).extend((d.id, seq))
    queued: list[str] = []
    for name, flat in by_queue.items():
        child = ops.sibling(name)
        for i in range(0, len(flat), 2000):
            n = yield child.call("dep_register", ops.name, parent_id, generation,
                                 *flat[i:i + 2000])
            if int(n) and name not in queued:
                queued.append(name)
    done = Resolved()
    for name in queued:
        done.extend((yield from resolve(ops.sibling(name))))
    return done


def resolve(ops: QueueOps, dead_letter: bool = True, _depth: int = 0) -> Op[Resolved]:
    """Step 4 for the notifications queued in ``ops``'s queue: deliver, then remove them.

    Parents that fail are recorded in the dead-letter queue (as every failed job is)."""
    done = Resolved()
    cascade: list[str] = []
    while True:
        entries = yield Call.cmd("ZRANGE", ops.keys.notify, 0, RESOLVE_BATCH - 1)
        if not entries:
            break
        by_parent: dict[str, list[Any]] = {}
        for entry in entries:
            try:
                item = json.loads(entry)
                pq, pid, cq, cid, kind, value = item[:6]
                gen = int(item[6]) if len(item) > 6 else 0  # (6: queued before generations)
                validate_queue_name(pq)
            except (ValueError, TypeError) as exc:
                log.warning("dropping a malformed dependency notification %r: %s", entry, exc)
                continue
            by_parent.setdefault(pq, []).extend(
                (str(pid), f"{cq} {cid}", str(kind), str(value), gen))
        for pq, args in by_parent.items():
            parent = ops.sibling(pq)
            released, failed, queued = yield parent.call("dep_resolve", *args)
            done.released += [(pq, str(i)) for i in released]
            done.failed += [(pq, str(i)) for i in failed]
            if int(queued) and pq not in cascade:
                cascade.append(pq)
            if failed and dead_letter:
                yield from _dead_letter(parent, [str(i) for i in failed])
        yield Call.cmd("ZREM", ops.keys.notify, *entries)
        if len(entries) < RESOLVE_BATCH:
            break
    if _depth < 50:  # a failed parent notifies its own parents: follow the chain
        for pq in cascade:
            done.extend((yield from resolve(ops.sibling(pq), dead_letter, _depth + 1)))
    return done


def _dead_letter(ops: QueueOps, ids: list[str]) -> Op[None]:
    """Record parents that failed on a dependency in the dead-letter queue."""
    if ops.name == DEAD_LETTER_QUEUE:
        return
    records = [r for r in (yield from ops.get_jobs_by_id(ids)) if r is not None]
    if records:
        letters = ops.dead_letters_of(records, "dependency_failed")
        yield from ops.sibling(DEAD_LETTER_QUEUE).add_dead_letters(letters)


def upkeep(ops: QueueOps, limit: int = 100, dead_letter: bool = True) -> Op[Resolved]:
    """A worker's periodic flow step for its queue (see the module docstring): deliver
    notifications left in ``notify``, and re-register the dependencies of waiting jobs
    whose re-check time has come. One round trip when there is nothing to do."""
    head, due = yield Batch([Call.cmd("ZRANGE", ops.keys.notify, 0, 0),
                             ops.call("dep_due", limit, RECHECK_MS)])
    done = Resolved()
    if head:
        done.extend((yield from resolve(ops, dead_letter)))
    done.extend((yield from _register_due(ops, due)))
    return done


def _register_due(ops: QueueOps, due: Sequence[Any]) -> Op[Resolved]:
    """Step 2 again for the parents a ``dep_due`` reply lists (with their pending deps)."""
    done = Resolved()
    i = 0
    while i < len(due):
        pid, gen, n = str(due[i]), int(due[i + 1]), int(due[i + 2])
        pairs = due[i + 3:i + 3 + 2 * n]
        i += 3 + 2 * n
        deps = []
        for k in range(0, len(pairs), 2):
            q, _, jid = str(pairs[k]).partition(" ")
            deps.append((Dep(q, jid), str(pairs[k + 1])))
        if deps:
            done.extend((yield from register(ops, pid, deps, gen)))
    return done


def register_due(ops: QueueOps, batch: int = 100) -> Op[Resolved]:
    """Step 2 again for every waiting job of ``ops``'s queue whose re-check is due (a
    re-armed job is due at once), ``batch`` jobs per ``dep_due`` call, until none is."""
    done = Resolved()
    while True:
        due = yield ops.call("dep_due", batch, RECHECK_MS)
        done.extend((yield from _register_due(ops, due)))
        if _due_count(due) < batch:
            return done


def _due_count(due: Sequence[Any]) -> int:
    i = count = 0
    while i < len(due):
        i += 3 + 2 * int(due[i + 2])
        count += 1
    return count


# -- Retries re-arm (DESIGN "Fan-in is never partial") ------------------------------------
# A job that failed on a dependency (dependency_failed), or was cancelled while it waited,
# never ran with its dependencies' results. Retrying it re-arms it: ``retry_failed.lua`` puts
# it back to waiting-children with EVERY dependency pending again, in one script, and its
# re-check due at once; ``register_due`` then registers its dependencies (the completed ones
# notify it at once with their current results; one still failed fails it again). A failed
# job keeps its parents ('par'), so retrying a dependency re-arms the parents that failed on
# it (``dep_rearm.lua`` in their slot), and theirs in turn. Each re-arm starts a new
# generation of the job: news queued for an earlier one -- a failure a resolver had read
# before the retry and delivers after it -- is stale and ignored (``dep_resolve.lua``); the
# registration that follows the re-arm tells it everything anew. A crash between the
# steps leaves a re-armed job whose re-check is due: the next upkeep of any worker of its
# queue registers it; a parent not re-armed yet stays failed (never partial) until it is
# retried itself.

def retry(ops: QueueOps, limit: int = 0, job_id: str = "") -> Op[int]:
    """``Queue.retry_failed`` / ``Job.retry``: how many failed jobs were moved back (to wait,
    or re-armed to waiting-children)."""
    reply = yield ops.call("retry_failed", limit, job_id)
    return (yield from after_retry([(ops, reply)]))


def after_retry(replies: Sequence[tuple[QueueOps, Any]]) -> Op[int]:
    """What ``retry_failed.lua`` replies ask for (see above); returns the jobs moved."""
    moved = 0
    if not replies:
        return moved
    some = replies[0][0]
    armed: dict[str, QueueOps] = {}
    parents: dict[str, dict[str, None]] = {}
    for ops, reply in replies:
        moved += int(reply[0])
        if int(reply[1]):
            armed[ops.name] = ops
        _add_parents(parents, reply[2])
    for _ in range(50):  # a chain of dependents, one level per round
        for ops in armed.values():
            yield from register_due(ops)
        if not parents:
            break
        armed = {}
        nxt: dict[str, dict[str, None]] = {}
        for name, ids in parents.items():
            ops = some.sibling(name)
            todo = list(ids)
            for i in range(0, len(todo), 1000):
                n, grand = yield ops.call("dep_rearm", *todo[i:i + 1000])
                if int(n):
                    armed[name] = ops
                _add_parents(nxt, grand)
        parents = nxt
    return moved


def _add_parents(out: dict[str, dict[str, None]], refs: Sequence[Any]) -> None:
    for ref in refs:
        q, _, pid = str(ref).partition(" ")
        if pid:
            out.setdefault(q, {})[pid] = None


def dependency_results(ops: QueueOps, job_id: str) -> Op[dict[str, Any]]:
    """``job.dependency_results()``: {"<queue>:<id>": result} of its completed dependencies
    (a dependency that failed under ``on_dependency_failure="ignore"`` is left out)."""
    text = yield Call.cmd("HGET", ops.keys.job(job_id), "dres")
    if text is None:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}
