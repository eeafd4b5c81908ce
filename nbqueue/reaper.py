"""Workers whose process is gone: their jobs released at once, not at lock expiry.

Every worker registers its process identity (``process_identity``): host name, pid, and on
Linux the boot id, the pid namespace and the start time of its pid. At each heartbeat (and
at its start) a worker reads its queue's registry; a worker registered on the SAME machine
(same host name, boot id and pid namespace) whose pid is not alive, is a zombie, or is alive
but started at another time (the pid was re-used) is gone. ``release_worker.lua`` takes it
out of the registry and expires the locks of the jobs it held, and the stalled sweep runs at
once (``stalled.lua``: back to wait, or failed after ``max_stalled_count`` stalls, exactly as
at lock expiry). Before, those jobs waited for their lock to expire (30 s by default) and for
the next sweep (up to 30 s more). A worker on another machine is never judged from here: it
is left to its lock, as before.

Stopping a worker by id from any process (``%nbqueue worker stop ID``, ``nbqueue workers
stop ID``, ``DetachedWorker.stop``): ``request_stop`` pushes a stop request on the worker's
cancel list, which its cancel listener blocks on (no polling, any host); the worker then
stops gracefully (its active jobs finish within its grace period).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .keys import DEFAULT_PREFIX, QueueKeys, registry_key
from .protocol import Batch, Call, Op

if TYPE_CHECKING:
    from .ops import QueueOps
    from .types import WorkerInfo

# What a stop request looks like on a worker's cancel list (job ids are pushed there too:
# this is no job id, as job ids hold no NUL).
STOP_REQUEST = "\x00stop"
STOP_TTL_MS = 600_000  # a request for a worker that never reads it goes away


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[str, str]:
    """(state, start time in clock ticks since boot) of ``pid`` from /proc ('' unknown)."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return "", ""
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) "
    return (fields[0], fields[19]) if len(fields) > 19 else ("", "")


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """This process as a worker registration records it: host, pid and ``proc`` =
    "<boot id>/<pid namespace>/<start ticks>" (parts '' where the system does not say)."""
    pid = os.getpid() if pid is None else pid
    boot = _read("/proc/sys/kernel/random/boot_id")
    return {"host": socket.gethostname(), "pid": pid,
            "proc": f"{boot}/{_pid_namespace()}/{_stat(pid)[1]}"}


def _parts(proc: str) -> list[str]:
    return [*proc.split("/"), "", "", ""][:3]


def _same_machine(proc: str, mine: str) -> bool:
    """Same boot of the same machine, same pid namespace (a registration without them, from
    an older version or another system, is never judged)."""
    boot, ns, _ = _parts(proc)
    my_boot, my_ns, _ = _parts(mine)
    return bool(boot) and boot == my_boot and ns == my_ns


def is_gone(host: str, pid: int, proc: str, me: Mapping[str, Any] | None = None) -> bool:
    """Whether a worker registered with (host, pid, proc) is known dead from here: on this
    machine and its process no longer exists (or is a zombie, or is another process)."""
    me = me or process_identity()
    if host != me["host"] or pid <= 0 or not _same_machine(proc, str(me["proc"])):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    state, started = _stat(pid)
    if state in ("Z", "X"):
        return True
    recorded = proc.rsplit("/", 1)[-1] if proc else ""
    return bool(recorded and started and started != recorded)


def gone_workers(workers: list[WorkerInfo], me_id: str) -> list[str]:
    """The ids among ``workers`` (one queue's registry) whose process is gone."""
    me = process_identity()
    return [w.id for w in workers if w.id != me_id and is_gone(w.host, w.pid, w.process, me)]


def reap(ops: QueueOps, me_id: str) -> Op[tuple[list[str], int]]:
    """Release the workers of ``ops``'s queue whose process is gone (see the module
    docstring): (their ids, how many jobs they held). The caller runs the stalled sweep when
    jobs were released."""
    dead = gone_workers((yield from ops.get_workers()), me_id)
    held = 0
    for wid in dead:
        held += int((yield ops.call("release_worker", wid)))
    return dead, held


def request_stop(worker_id: str, queues: list[str] | None = None,
                 prefix: str = DEFAULT_PREFIX) -> Op[str | None]:
    """Ask worker ``worker_id`` to stop (gracefully) through its cancel list; returns the
    queue it works for, or None when no queue's registry (of ``queues``, default: every
    queue known to the registry of queue names) lists it."""
    names = queues if queues is not None else sorted(
        (yield Call.cmd("SMEMBERS", registry_key(prefix))))
    if not names:
        return None
    keys = [QueueKeys(n, prefix) for n in names]
    scores = yield Batch([Call.cmd("ZSCORE", k.workers, worker_id) for k in keys])
    for k, score in zip(keys, scores):
        if score is not None:
            lst = k.cancel_list(worker_id)
            yield Batch([Call.cmd("RPUSH", lst, STOP_REQUEST),
                         Call.cmd("PEXPIRE", lst, STOP_TTL_MS)])
            return k.name
    return None
