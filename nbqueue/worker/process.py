"""Process mode: the parent runs the engine, child processes only run job bodies.

The process that holds a job's lock must not be the one that runs its body (BullMQ's
sandboxed processors): a body that holds the GIL in one long C call (``sum(range(4 *
10**9))``) would otherwise stop the lock renewal, and the job would be re-run elsewhere.
So the parent does all the Redis work (fetch, locks, finish, stalled sweep, cancel) on its
engine loop, and a :class:`ChildPool` of executor processes runs the bodies:

- each child gets the processor once, at spawn (pickled by value with cloudpickle,
  through its pipe: never through Redis), then receives job records over the pipe and
  sends back progress, log lines (``job.log``, captured print/logging) and the outcome;
- **one job per child at a time**, and **one held next**: ``concurrency`` children, each
  handed its next job while it runs the current one, so it starts it as soon as it sends
  the outcome, without waiting for the parent's finish and fetch round trip. Killing a
  child never loses another job: its held job had not started and goes to another child
  (held jobs are locked, and their locks renewed, like running ones). A timed-out or
  cancelled body that will not stop (stuck in C code) is ended by killing its child and
  starting a new one, which costs one spawn. The price is a process per concurrent job
  (memory) - which is what CPU-bound work wants anyway; I/O-bound work belongs in thread
  or asyncio mode. Priority caveat: a held job was taken from the queue while its child
  was busy, so a more urgent job added meanwhile waits behind it (at most one job per
  child, like ``prefetch``);
- cancel: the parent marks the job cancelled in the child's shared ``cancels`` slots
  (by the sequence number it gave the job) and signals the child (SIGUSR1): a held job
  then never starts (the child checks before it starts one; the parent books it cancelled
  at once), a running sync body gets ``JobCancelledError`` raised at its next bytecode, an
  async one has its task cancelled; a signal meant for another job of the child is
  ignored. A child that has not reported within ``CANCEL_GRACE_S`` (a C call holding the
  GIL) is killed and replaced;
- timeout: past the job's ``timeout`` the child is killed and replaced (the attempt fails
  with error type ``timeout``);
- a child that dies on its own (segfault, OOM kill, ``kill -9``, ``os._exit``) is found
  dead by its pid (a pidfd; not by the pipe's EOF, which a grandchild can hold off) and
  replaced; its attempt fails at once with an error type naming the exit code or signal
  (``child killed by SIGKILL (out of memory?)``), and the job's attempts/backoff apply;
  its held job had not started and goes to another child;
- each child leads its own process group: what a body starts (``os.fork``, subprocess,
  ``multiprocessing``, which works in a body) is killed with the group when the child dies
  or is replaced, and when the worker stops;
- children ignore SIGINT/SIGTERM (a Ctrl-C or a process-group SIGTERM reaches the parent,
  which stops gracefully: it stops fetching, lets running bodies finish within the grace
  period, hands back the rest and kills their children), and die with the parent
  (``PR_SET_PDEATHSIG`` on Linux; elsewhere they exit when the pipe closes, once idle).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import multiprocessing.util  # (see below)
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from ..errors import NbqueueError
from ..records import JobRecord, Outcome
from .body import cancelled_outcome, classify
from .child import STARTED, child_main
from .runners import Done, Started

# Imported at nbqueue's import, so that multiprocessing's own exit hook (which joins every
# child) is registered before nbqueue's (which stops the workers, and so their children):
# atexit runs the later one first.

log = logging.getLogger("nbqueue.worker")

HOLD = 1  # jobs a child holds beyond the one it runs (its next)
CANCEL_GRACE_S = 2.0  # a cancelled body that has not stopped by then: its child is killed
RESPAWN_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)  # children dying at once, again and again


# -- the parent ---------------------------------------------------------------------------
Slot = tuple[int, JobRecord]  # (the sequence number the parent gave the job, its record)


class _Child:
    __slots__ = ("cancel_at", "cancels", "conn", "exit_fd", "job", "next", "poller", "proc",
                 "ready", "seq", "spawned", "started", "void")

    def __init__(self, proc: Any, conn: Any, cancels: Any) -> None:
        self.proc = proc
        self.conn = conn
        # "more to read?" in one C call: Connection.poll() builds a selector per call (~20
        # Python calls), twice per message
        self.poller = select.poll()
        self.poller.register(conn.fileno(), select.POLLIN)
        # readable once the child has exited, found by its pid (a pidfd), not by the pipe's
        # EOF: a grandchild a body forked holds the pipe open (-1: none, Linux < 5.3)
        self.exit_fd = _pidfd(proc.pid)
        self.cancels = cancels  # shared with the child: sequence numbers to cancel
        self.job: Slot | None = None  # running
        self.next: Slot | None = None  # held: sent, starts when ``job`` is done
        self.void: set[int] = set()  # held jobs cancelled (booked already; never start)
        # the numbers of its jobs, consecutive: its running and held ones differ in parity
        self.seq = 0
        self.ready = False  # loaded its processor: jobs go to ready children only
        self.started = 0.0
        self.spawned = time.monotonic()
        self.cancel_at: asyncio.TimerHandle | None = None


class ProcessRunner:
    """``mode="process"``: the executor children of an engine (see the module docstring).
    Lives on the engine's loop."""

    is_async = False

    def __init__(self, size: int, payload: bytes, *, name: str,
                 on_progress: Callable[[str, Any], None],
                 on_log: Callable[[str, str], None], hold: int = HOLD) -> None:
        self.size = size
        self.holds = size * min(1, hold)  # one held job per child
        self.payload = payload
        self.name = name
        self.on_progress = on_progress
        self.on_log = on_log
        self.on_done: Done = _unbound
        self.on_started: Started = _unbound
        self.children: list[_Child] = []
        self.pending: collections.deque[JobRecord] = collections.deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.spawned = 0
        self._quick_deaths = 0
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------
    def open(self, done: Done, started: Started) -> None:
        """Start one child; more start as jobs need them, up to ``size`` (a child takes
        ~0.5-1 s to import and load the processor: starting them all at once would delay
        the first job for nothing on a quiet queue)."""
        self.on_done, self.on_started = done, started
        self.loop = asyncio.get_running_loop()
        if self.size:
            self._spawn()

    def _spawn(self) -> None:
        assert self.loop is not None
        ctx = multiprocessing.get_context("spawn")
        parent_end, child_end = ctx.Pipe(duplex=True)
        cancels = ctx.Array("q", 3)  # (with its lock) cancel slots 0-1, STARTED
        proc = ctx.Process(target=child_main,
                           args=(self.payload, child_end, os.getpid(), cancels),
                           daemon=True, name=f"nbqueue-child-{self.name}-{self.spawned}")
        proc.start()
        child_end.close()
        self.spawned += 1
        child = _Child(proc, parent_end, cancels)
        self.children.append(child)
        self.loop.add_reader(parent_end.fileno(), self._readable, child)
        if child.exit_fd >= 0:
            self.loop.add_reader(child.exit_fd, self._died, child)

    def close(self) -> None:
        """Stop every child: idle ones are told to exit, busy ones (their jobs were handed
        back) are killed; none outlives this call by more than a few seconds."""
        self._closed = True
        for child in self.children:
            self._forget(child)
            if child.job is None:
                try:
                    child.conn.send(("stop",))
                except OSError:
                    pass
            else:
                child.proc.kill()
        deadline = time.monotonic() + 3
        for child in self.children:
            child.proc.join(max(0.0, deadline - time.monotonic()))
            if child.proc.is_alive():
                child.proc.kill()
                child.proc.join(2)
            _kill_group(child)  # what its bodies started dies with the worker
            child.conn.close()
            _close_fd(child)
        self.children = []

    # -- jobs --------------------------------------------------------------------------
    def start(self, record: JobRecord) -> None:
        self.pending.append(record)
        self._dispatch()

    def _send(self, child: _Child, record: JobRecord) -> Slot:
        child.seq += 1
        try:
            child.conn.send(("run", child.seq, record))
        except OSError:  # died meanwhile: _readable sees the EOF and recovers
            pass
        return child.seq, record

    def _dispatch(self) -> None:
        pending = self.pending
        for child in self.children:  # idle children first: they start the job now
            if not pending:
                break
            if child.job is None and child.ready:
                record = pending.popleft()
                child.job, child.started = self._send(child, record), time.monotonic()
                self.on_started(record)  # its timeout counts from now
        # jobs still waiting: start children for them (those starting count as coming)
        starting = sum(1 for c in self.children if not c.ready)
        while (not self._closed and len(self.children) < self.size
               and starting < len(pending)):
            self._spawn()
            starting += 1
        if self.holds:  # what the starting children will not take: held by busy ones
            for child in self.children:
                if len(pending) <= starting:
                    break
                if child.ready and child.job is not None and child.next is None:
                    child.next = self._send(child, pending.popleft())

    def cancel(self, record: JobRecord) -> bool:
        """Stop a job: an unstarted one (pending, or held by a child, which will skip it)
        is over at once (True: the caller books it); a running one's child is signalled,
        then killed if it has not reported within ``CANCEL_GRACE_S`` (False: the outcome
        comes from the child, or from the kill)."""
        if record in self.pending:
            self.pending.remove(record)
            return True
        child, slot = self._child_of(record)
        if child is None or slot is None:
            return False
        if child.next is slot and self._recall(child, slot):
            return True  # it never starts; its report (when the child gets to it) is void
        seq = slot[0]
        child.cancels[seq % 2] = seq  # read by the child's signal handler while it runs it
        try:
            os.kill(child.proc.pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass
        assert self.loop is not None
        if child.cancel_at is None:
            child.cancel_at = self.loop.call_later(CANCEL_GRACE_S, self._force_cancel, child,
                                                   slot)
        return False

    def _force_cancel(self, child: _Child, slot: Slot) -> None:
        child.cancel_at = None
        if child.job is not slot:
            return  # it reported in time
        record = slot[1]
        log.warning("job %s did not stop within %.0fs of its cancel; killing its child %s",
                    record.id, CANCEL_GRACE_S, child.proc.pid)
        self._replace(child)
        self.on_done(record, cancelled_outcome(record), time.monotonic() - child.started)

    def abort(self, record: JobRecord, stopping: bool = False) -> None:
        """The job is over for the engine (timed out, handed back): stop its body now by
        killing its child (a new one takes its place unless ``stopping``); an unstarted one
        is dropped (a held one marked so that it never starts)."""
        if record in self.pending:
            self.pending.remove(record)
            return
        child, slot = self._child_of(record)
        if child is None or slot is None:
            return
        if child.next is slot and self._recall(child, slot):
            return
        self._replace(child, respawn=not stopping)

    def _recall(self, child: _Child, slot: Slot) -> bool:
        """Make sure the held job ``slot`` never starts: True, unless the child started it
        already (it just finished the job before: then it is a running job)."""
        seq = slot[0]
        with child.cancels.get_lock():
            if child.cancels[STARTED] == seq:
                return False
            child.cancels[seq % 2] = seq
        child.void.add(seq)
        return True

    def unhold(self) -> list[JobRecord]:
        """The worker is stopping: the jobs handed to us that have not started (waiting
        for a child, or held by one) are given back, and none of them will start."""
        back = list(self.pending)
        self.pending.clear()
        for child in self.children:
            slot = child.next
            if slot is not None and slot[0] not in child.void and self._recall(child, slot):
                back.append(slot[1])
        return back

    def _child_of(self, record: JobRecord) -> tuple[_Child | None, Slot | None]:
        for child in self.children:
            for slot in (child.job, child.next):
                if slot is not None and slot[1] is record and slot[0] not in child.void:
                    return child, slot
        return None, None

    def describe(self) -> str:
        def ids(c: _Child) -> tuple[int, str | None, str | None]:
            return (c.proc.pid, c.job[1].id if c.job else None,
                    c.next[1].id if c.next else None)

        return (f"children={[ids(c) for c in self.children]} "
                f"pending={[r.id for r in self.pending]}")

    # -- messages and deaths -------------------------------------------------------------
    def _readable(self, child: _Child) -> None:
        try:
            conn, poll = child.conn, child.poller.poll
            while True:
                self._handle(child, conn.recv())
                if not poll(0):
                    break
        except (EOFError, OSError):
            self._died(child)

    def _handle(self, child: _Child, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "ready":
            child.ready = True
            self._dispatch()
        elif kind == "progress":
            self.on_progress(msg[1], msg[2])
        elif kind == "log":
            self.on_log(msg[1], msg[2])
        elif kind == "done":
            _, seq, k, value, etype, delay, trace, duration = msg
            slot, child.job = child.job, None
            if child.cancel_at is not None:
                child.cancel_at.cancel()
                child.cancel_at = None
            self._quick_deaths = 0
            if child.next is not None:  # the child starts its held job now
                child.job, child.next = child.next, None
                child.started = time.monotonic()
                if child.job[0] not in child.void:
                    self.on_started(child.job[1])
            if slot is not None and slot[0] == seq and seq not in child.void:
                record = slot[1]
                self.on_done(record, Outcome(record, k, value, etype, delay,
                                             stacktrace=trace), duration)
            child.void.discard(seq)
            self._dispatch()

    def _died(self, child: _Child) -> None:
        if child not in self.children:
            return
        with contextlib.suppress(EOFError, OSError):  # what it sent before it died counts
            while child.conn.poll():
                self._handle(child, child.conn.recv())
        slot = child.job
        self._forget(child)
        self.children.remove(child)
        child.proc.join(1)
        code = child.proc.exitcode
        _kill_group(child)  # the body's descendants die with its job
        child.conn.close()
        _close_fd(child)
        if time.monotonic() - child.spawned < 2:
            self._quick_deaths += 1
        self._requeue_held(child)  # its held job had not started: another child runs it
        if slot is not None and slot[0] not in child.void:
            record = slot[1]
            how = describe_exit(code)
            log.error("the child running job %s of %s died (%s); its attempt failed, "
                      "starting another child", record.id, self.name, how)
            self.on_done(record, _died_outcome(record, how), time.monotonic() - child.started)
        if not self._closed:
            self._respawn_later()

    def _requeue_held(self, child: _Child) -> None:
        """A child that is gone had not started its held job: another child runs it."""
        held, child.next = child.next, None
        if held is not None and held[0] not in child.void and not self._closed:
            self.pending.appendleft(held[1])

    def _replace(self, child: _Child, respawn: bool = True) -> None:
        """Kill ``child`` (its job is over for us) and start another in its place; its held
        job goes to another child."""
        self._forget(child)
        if child in self.children:
            self.children.remove(child)
        child.proc.kill()
        child.proc.join(2)
        _kill_group(child)
        child.conn.close()
        _close_fd(child)
        if respawn:
            self._requeue_held(child)
        if respawn and not self._closed:
            if not self.children:
                self._spawn()  # keep one child ready
            self._dispatch()  # and more if jobs wait

    def _respawn_later(self) -> None:
        assert self.loop is not None
        k = min(self._quick_deaths, len(RESPAWN_BACKOFF_S) - 1)
        if k >= len(RESPAWN_BACKOFF_S) - 1:
            log.error("children of %s keep dying at start; retrying every %.0fs", self.name,
                      RESPAWN_BACKOFF_S[-1])
        self.loop.call_later(RESPAWN_BACKOFF_S[k], self._respawn)

    def _respawn(self) -> None:
        if not self._closed and (not self.children or self.pending):
            if not self.children:
                self._spawn()
            self._dispatch()

    def _forget(self, child: _Child) -> None:
        if child.cancel_at is not None:
            child.cancel_at.cancel()
            child.cancel_at = None
        if self.loop is not None:
            try:
                self.loop.remove_reader(child.conn.fileno())
            except (OSError, ValueError):
                pass
            if child.exit_fd >= 0:
                self.loop.remove_reader(child.exit_fd)


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def _close_fd(child: _Child) -> None:
    if child.exit_fd >= 0:
        with contextlib.suppress(OSError):
            os.close(child.exit_fd)
        child.exit_fd = -1


def _kill_group(child: _Child) -> None:
    """SIGKILL the child's process group (it leads one: ``os.setsid`` in child_main)."""
    with contextlib.suppress(OSError):
        os.killpg(child.proc.pid, signal.SIGKILL)


def describe_exit(code: int | None) -> str:
    """How a child ended, for its job's error type: ``exit code 3``, ``killed by SIGSEGV``,
    ``killed by SIGKILL (out of memory?)`` (what the OOM killer sends)."""
    if code is None:
        return "died (exit status unknown)"
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")


def _died_outcome(record: JobRecord, how: str) -> Outcome:
    """A dead child's attempt: failed, by the job's retry policy (attempts, backoff)."""
    outcome = classify(record, error=ChildDiedError(
        f"the child process running the job died: {how}"))
    outcome.error_type, outcome.stacktrace = f"child {how}", ""
    return outcome


class ChildDiedError(NbqueueError):
    """The child process running a job died (process mode); the attempt failed."""


def _unbound(*args: Any) -> None:
    raise RuntimeError("ProcessRunner used before open()")


def child_payload(processor: Any, *, connection: dict[str, Any], queue_name: str, prefix: str,
                  backoff_strategy: Any, store: str | None = None,
                  hooks: Any = ()) -> bytes:
    """What every child gets once, at spawn: the processor (and the per-job hooks) pickled
    by value (cloudpickle; a function from an importable module travels by reference and is
    imported there)."""
    import cloudpickle

    from ..sources import capture

    return cloudpickle.dumps({"processor": processor, "connection": connection,
                              "store": store, "queue_name": queue_name, "prefix": prefix,
                              "backoff_strategy": backoff_strategy, "hooks": tuple(hooks),
                              "sources": capture(processor)})  # tracebacks: nbqueue/sources.py
