"""W4's floor: what one round trip through Redis costs before any of nbqueue's own Python.

``python -m bench.w4floor`` (about a minute). One round trip on warm workers, six ways,
interleaved (each repetition runs every way back to back, order rotated), p50 of ``--k``
sequential trips after 50 dropped:

* ``ppe``: ``ProcessPoolExecutor(2).submit(f, i).result()`` (the issue's yardstick);
* ``raw``: thread layout in one process, nothing durable: the caller ``LPUSH``es the job and
  ``BLPOP``s the reply, a consumer thread ``BLPOP``s the job and ``LPUSH``es the reply
  (hiredis-packed commands on plain connections): the transport alone;
* ``scripts``: the same layout doing nbqueue's durable work with nbqueue's own scripts:
  ``add.lua`` (stores and locks the job, hands it to the parked consumer), ``finish.lua``
  (stores the result, writes the ``completed`` event, parks the consumer again), the caller
  waiting on the event stream as ``Job.result()`` does (``XREAD`` + ``XRANGE``). The calls
  are built by nbqueue's ops layer *before* the clock starts (the consumer's finish from a
  template: job id and lock put in), so no nbqueue Python (engine, job thread, handles,
  parsing) is on the path: the floor of the durable design on this machine;
* ``api``: the caller of ``nbqueue``, the worker of ``scripts``: ``Queue.add(...).result()``
  served by that bare consumer: what the public API's own Python adds on the caller's side
  (encoding and checking the data, the exactly-once token, the ``Job``, the wait);
* ``lean``: ``Queue.add(...).result()`` served by one plain thread that does, in a loop,
  what nbqueue's worker does for a job, with nbqueue's own parts but no event loop and no
  hand-off between threads: the park's ``BLPOP`` (``ops.block``), the job's handle, the
  job body (``JobBody.run``: output capture, the processor, the outcome), the finish
  (``ops.finish``, parking again) -- the job thread *is* the parked worker. What a worker
  built that way would cost (none of the engine's upkeep: locks, stalls, cancel, stop);
* ``nbqueue``: ``Queue.add(...).result()`` with a ``mode="thread"`` worker (concurrency 2).

The gap between ``scripts`` and ``raw`` is the price of durability (two script calls and
their stored state); between ``api`` and ``scripts``, the caller's Python; between ``lean``
and ``api``, the Python of a job's own handling; between ``nbqueue`` and ``lean``, the
worker's structure (its event loop, the hand-offs between it and the job thread).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import redis

from bench.harness import RedisServer

WARMUP = 50


def echo(x: int) -> int:
    return x


def _p50(trip: Callable[[int], object], k: int) -> float:
    for i in range(WARMUP):
        trip(i)
    out = []
    for i in range(k):
        t0 = time.perf_counter()
        trip(i)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _conn(port: int, decode: bool = False) -> redis.Connection:
    c = redis.Connection(host="127.0.0.1", port=port, decode_responses=decode,
                         socket_timeout=None)
    c.connect()
    return c


def _pack(*commands: tuple[Any, ...]) -> list[bytes]:
    """One write of ``commands`` (``Connection.send_packed_command`` takes a list)."""
    from hiredis import pack_command

    return [b"".join(pack_command(c) for c in commands)]


def _popped(c: redis.Connection, key: str) -> Iterator[Any]:
    """What ``BLPOP`` takes from ``key``, one value at a time, until the server stops."""
    pop = _pack(("BLPOP", key, 0))
    while True:
        c.send_packed_command(pop)
        try:
            _, value = c.read_response()
        except redis.ConnectionError:
            return  # the server stopped: the run is over
        yield value


class Raw:
    """LPUSH/BLPOP there and back; a consumer thread in this process."""

    def __init__(self, port: int) -> None:
        self.c = _conn(port)
        self.c.send_packed_command(_pack(("DEL", "raw:job", "raw:rep")))
        self.c.read_response()
        self.t = threading.Thread(target=self._consume, args=(port,), daemon=True)
        self.t.start()

    def _consume(self, port: int) -> None:
        c = _conn(port)
        for m in _popped(c, "raw:job"):
            c.send_packed_command(_pack(("LPUSH", "raw:rep", m)))
            c.read_response()

    def trip(self, i: int) -> None:
        self.c.send_packed_command(_pack(("LPUSH", "raw:job", i), ("BLPOP", "raw:rep", 0)))
        self.c.read_response()
        _, m = self.c.read_response()
        assert int(m) == i


class Scripts:
    """nbqueue's durable work (add.lua, finish.lua, the event stream), calls built ahead."""

    def __init__(self, port: int) -> None:
        from nbqueue import scripts
        from nbqueue.ops import QueueOps
        from nbqueue.records import JobRecord, Outcome, OutcomeKind

        self.ops = QueueOps("floor")
        self.client = r = redis.Redis(port=port, decode_responses=True)
        self.sha = {n: r.script_load(scripts.get(n).source) for n in ("add", "fetch", "finish")}
        self.events = self.ops.keys.events
        self.c = _conn(port, decode=True)  # as nbqueue's clients: replies as text
        self.token = f"floor-{uuid.uuid4().hex[:8]}"
        lock_ms = 30_000
        # the finish of one completed job (value 7), parking again: a template
        job = JobRecord(id="\x00id", name="w4", data={}, opts=self.ops.defaults, lock="\x00lk")
        op = self.ops.finish([Outcome(job, OutcomeKind.COMPLETED, "7")], {}, 2, self.token,
                             lock_ms, park_ms=5000)
        self.finish_cmd = self._cmd(next(op))
        wc = _conn(port, decode=True)  # registered as idle (parked) before the first add
        wc.send_packed_command(_pack(self._cmd(self.ops.call(
            "fetch", 2, self.token, lock_ms, 5000, 0))))
        wc.read_response()
        self.t = threading.Thread(target=self._consume, args=(wc,), daemon=True)
        self.t.start()
        import nbqueue

        self.q = nbqueue.Queue("floor", nbqueue.connect(f"redis://127.0.0.1:{port}/0"))

    def api_trip(self, i: int) -> None:
        """The public API against the bare consumer (which answers 7 to every job)."""
        assert self.q.add({"type": "w4", "payload": {"x": i}}).result(timeout=60) == 7

    def _cmd(self, call: Any) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha[call.script], len(call.keys), *call.keys, *call.args)

    def _consume(self, c: redis.Connection) -> None:
        tpl = self.finish_cmd
        at_id, at_lock = tpl.index("\x00id"), tpl.index("\x00lk")
        for entry in _popped(c, self.ops.handoff_key(self.token)):
            if entry == "0":  # a wake-up, not a job (includes/fetch.lua)
                continue
            job = json.loads(entry)
            cmd = list(tpl)
            cmd[at_id], cmd[at_lock] = job[0], job[1]
            c.send_packed_command(_pack(tuple(cmd)))
            c.read_response()

    def run(self, k: int) -> float:
        from nbqueue.protocol import Call, run_sync
        from nbqueue.records import parse_events, stream_entries

        def one(i: int, timed: list[float] | None) -> None:
            op = self.ops.add({"type": "w4", "payload": {"x": i}}, {})
            step = next(op)
            if not isinstance(step, Call):  # the queue's registration rides along: untimed
                run_sync(self.client, _resumed(step, op))
                return
            add = _pack(self._cmd(step))
            t0 = time.perf_counter()
            c = self.c
            c.send_packed_command(add)
            reply = c.read_response()
            seq, _, label = str(reply[0]).partition("/")
            job_id = f"{int(seq) + 1}{label}"
            last = reply[2]
            done = False
            while not done:
                c.send_packed_command(_pack(
                    ("XREAD", "COUNT", 500, "BLOCK", 1000, "STREAMS", self.events, last),
                    ("XRANGE", self.events, "-", "+", "COUNT", 1)))
                read = c.read_response()
                c.read_response()
                entries = stream_entries(read)
                if entries:
                    last = entries[-1][0]
                for e in parse_events(entries):
                    if e.event == "completed" and e.job_id == job_id:
                        done = True
            if timed is not None:
                timed.append(time.perf_counter() - t0)
            try:
                op.send(reply)  # off the clock: the add's token is acknowledged as usual
            except StopIteration:
                pass

        for i in range(WARMUP):
            one(i, None)
        out: list[float] = []
        for i in range(k):
            one(i, out)
        return statistics.median(out)


def _resumed(first: Any, op: Any) -> Any:
    """``op`` driven on from a step already taken out of it (``first``)."""
    reply = yield first
    while True:
        try:
            step = op.send(reply)
        except StopIteration as stop:
            return stop.value
        reply = yield step


def _nbq_process(job: Any) -> Any:
    return job.payload["x"]


class Lean:
    """One thread that parks, runs and finishes jobs itself (see the module docstring)."""

    def __init__(self, url: str) -> None:
        import nbqueue
        from nbqueue.keys import DEFAULT_PREFIX
        from nbqueue.ops import QueueOps
        from nbqueue.worker.body import JobBody
        from nbqueue.worker.engine import queue_job_factory

        conn = nbqueue.connect(url)
        self.q = nbqueue.Queue("floor-lean", conn)
        self.ops = QueueOps("floor-lean")
        self.ops.lazy_data = True  # as the engine's: the body decodes the data
        self.client = conn.new_sync(socket_timeout=30.0)  # its own: a BLPOP holds it
        self.token = f"lean-{uuid.uuid4().hex[:8]}"
        self.make = queue_job_factory("floor-lean", conn, DEFAULT_PREFIX, False)
        self.body = JobBody(_nbq_process, lambda job_id, line: None)
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self) -> None:
        from nbqueue.protocol import run_sync

        ops, token, lock_ms = self.ops, self.token, 30_000
        wake = ops.keys.wake(token)
        jobs: list[Any] = []
        parked = False  # registered as idle by the last finish: its BLPOP alone follows
        while True:
            if not jobs:
                try:
                    fetched, _ = run_sync(self.client, ops.block(wake, 5.0, token) if parked
                                          else ops.block_and_fetch(wake, 5.0, 1, token,
                                                                   lock_ms))
                except (redis.ConnectionError, OSError):
                    return  # the server stopped: the run is over
                jobs, parked = list(fetched.jobs), False
                continue
            record = jobs.pop()
            outcome, _ = self.body.run(record, self.make(record, self))
            # finish, fetch the next, and park if none came (as the engine's flush does)
            _, fetched = run_sync(self.client, ops.finish(
                [outcome], {}, 1, token, lock_ms, park_ms=5000))
            jobs = list(fetched.jobs)
            parked = not jobs

    # the job handle's sink (progress is not sent: no processor here reports any)
    def report_progress(self, job: Any, value: Any) -> None:
        pass

    def report_log(self, job_id: str, line: str) -> None:
        pass

    def trip(self, i: int) -> None:
        assert self.q.add({"type": "w4", "payload": {"x": i}}).result(timeout=60) == i


class Nbqueue:
    def __init__(self, url: str) -> None:
        import nbqueue

        conn = nbqueue.connect(url)
        self.q = nbqueue.Queue("floor-nbq", conn)
        self.w = nbqueue.Worker("floor-nbq", _nbq_process, conn, mode="thread",
                                concurrency=2, dead_letter=False).start()

    def trip(self, i: int) -> None:
        assert self.q.add({"type": "w4", "payload": {"x": i}}).result(timeout=60) == i


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.w4floor", description=__doc__)
    p.add_argument("--k", type=int, default=1000, help="timed trips per measurement")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=None, help="write the raw results here (JSON)")
    a = p.parse_args(argv)
    server = RedisServer().start()
    try:
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(echo, range(8)))
            raw, scripts, nbq = Raw(server.port), Scripts(server.port), Nbqueue(server.url)
            lean = Lean(server.url)
            ways: dict[str, Callable[[], float]] = {
                "ppe": lambda: _p50(lambda i: pool.submit(echo, i).result(), a.k),
                "raw": lambda: _p50(raw.trip, a.k),
                "scripts": lambda: scripts.run(a.k),
                "api": lambda: _p50(scripts.api_trip, a.k),
                "lean": lambda: _p50(lean.trip, a.k),
                "nbqueue": lambda: _p50(nbq.trip, a.k),
            }
            names = list(ways)
            got: dict[str, list[float]] = {n: [] for n in names}
            for rep in range(a.reps):
                order = names[rep % len(names):] + names[:rep % len(names)]
                for n in order:
                    got[n].append(ways[n]())
                print(f"rep {rep + 1}: " + ", ".join(
                    f"{n} {got[n][-1] * 1e6:.0f} us" for n in names), flush=True)
            nbq.w.stop()
    finally:
        server.stop()
    print(f"\np50 of {a.k} round trips, median over {a.reps} repetitions "
          "(ratio to ProcessPool of the same repetition):\n")
    print("| way | p50 | x ProcessPool |\n|---|---:|---:|")
    for n in names:
        ratios = [v / b for v, b in zip(got[n], got["ppe"])]
        print(f"| {n} | {statistics.median(got[n]) * 1e6:.0f} us | "
              f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"k": a.k, "reps": a.reps, "p50_s": got}, f, indent=1)


if __name__ == "__main__":
    main()
