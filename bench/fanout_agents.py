"""The systems of ``python -m bench.fanout``, one long-lived agent process each.

An agent starts its system, warms its workers, then runs the workloads it is sent on stdin
(one JSON line each) and answers each with one ``@@`` line on stdout. Every workload
returns ``{"t": wall seconds, "jobs": n, "cpu_main": ..., "cpu_proc": ..., "check": ...}``;
nbqueue agents add ``"cmds"`` (Redis commands, ``INFO commandstats`` delta)."""

from __future__ import annotations

import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench import fanout_work as fw

WORKERS = 2  # worker processes of every system (2 shared cores)
W4_WARMUP = 10


class Meter:
    """Times one workload: wall clock, CPU of the calling thread (the producer/waiter) and
    of the whole process."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.c0 = time.thread_time()
        self.p0 = time.process_time()

    def done(self, jobs: int, check: Any, **extra: Any) -> dict[str, Any]:
        return {"t": time.perf_counter() - self.t0, "jobs": jobs,
                "cpu_main": time.thread_time() - self.c0,
                "cpu_proc": time.process_time() - self.p0, "check": check, **extra}


def _chunks(xs: list[int], size: int) -> list[list[int]]:
    return [xs[i:i + size] for i in range(0, len(xs), size)]


def _frames(df: Any, size: int) -> list[Any]:
    return [df.iloc[i:i + size] for i in range(0, len(df), size)]


def _p(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, int(q * len(s)))]


def _latency(call: Callable[[int], int], k: int) -> dict[str, Any]:
    for i in range(W4_WARMUP):
        assert call(i) == i + 1
    lat = []
    m = Meter()
    for i in range(k):
        t = time.perf_counter()
        assert call(i) == i + 1
        lat.append(time.perf_counter() - t)
    return m.done(k, None, p50=statistics.median(lat), p95=_p(lat, 0.95))


class Agent:
    """A system: ``run(workload, params)`` -> measurements."""

    def run(self, workload: str, p: dict[str, Any]) -> dict[str, Any]:
        fn = getattr(self, workload, None)
        if fn is None:
            return {"skip": f"{type(self).__name__} has no {workload}"}
        out: dict[str, Any] = fn(p)
        return out

    def close(self) -> None:
        pass


class ExecutorAgent(Agent):
    """concurrent.futures.ProcessPoolExecutor, or loky's reusable executor (same API)."""

    def __init__(self, kind: str) -> None:
        if kind == "loky":
            from loky import get_reusable_executor

            self.pool: Any = get_reusable_executor(max_workers=WORKERS, timeout=3600)
        else:
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(WORKERS)
        list(self.pool.map(fw.w4_echo, range(WORKERS * 4)))  # every worker up
        import pandas  # noqa: F401  (the parent side of W2; the workers import it warming)

        list(self.pool.map(_warm_pandas, range(WORKERS * 2)))

    def w1_chunked(self, p: dict[str, Any]) -> dict[str, Any]:
        xs = list(range(p["n"]))
        m = Meter()
        out = list(self.pool.map(fw.w1_item, xs, chunksize=p["chunksize"]))
        return m.done(-(-len(xs) // p["chunksize"]), sum(out))

    def w1_item(self, p: dict[str, Any]) -> dict[str, Any]:
        xs = list(range(p["n"]))
        m = Meter()
        out = list(self.pool.map(fw.w1_item, xs, chunksize=1))
        return m.done(len(xs), sum(out))

    def w2(self, p: dict[str, Any]) -> dict[str, Any]:
        import pandas as pd

        df = fw.w2_source(p["rows"])
        m = Meter()
        parts = _frames(df, p["chunk"])
        frame = pd.concat(list(self.pool.map(fw.w2_work, parts)), ignore_index=True)
        return m.done(len(parts), fw.w2_check(frame))

    def w3(self, p: dict[str, Any]) -> dict[str, Any]:
        m = Meter()
        futs = [self.pool.submit(fw.w3_task, i) for i in range(p["n"])]
        total = self.pool.submit(fw.w3_combine, [f.result() for f in futs]).result()
        return m.done(p["n"] + 1, total)

    def w4(self, p: dict[str, Any]) -> dict[str, Any]:
        return _latency(lambda i: int(self.pool.submit(fw.w4_echo, i).result()), p["k"])

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _warm_pandas(x: int) -> int:
    import pandas  # noqa: F401

    return x


class DaskAgent(Agent):
    """dask.distributed: a LocalCluster of WORKERS processes, one thread each."""

    def __init__(self) -> None:
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                    dashboard_address=None)
        self.client = Client(self.cluster)
        self.client.gather(self.client.map(fw.w4_echo, range(WORKERS * 4), pure=False))
        self.client.run(_warm_pandas, 0)

    def w1_chunked(self, p: dict[str, Any]) -> dict[str, Any]:
        xs = list(range(p["n"]))
        m = Meter()
        parts = self.client.gather(self.client.map(fw.w1_chunk, _chunks(xs, p["chunksize"]),
                                                   pure=False))
        return m.done(len(parts), sum(sum(x) for x in parts))

    def w1_item(self, p: dict[str, Any]) -> dict[str, Any]:
        xs = list(range(p["n"]))
        m = Meter()
        out = self.client.gather(self.client.map(fw.w1_item, xs, pure=False))
        return m.done(len(xs), sum(out))

    def w2(self, p: dict[str, Any]) -> dict[str, Any]:
        import pandas as pd

        df = fw.w2_source(p["rows"])
        m = Meter()
        parts = _frames(df, p["chunk"])
        outs = self.client.gather(self.client.map(fw.w2_work, parts, pure=False))
        frame = pd.concat(outs, ignore_index=True)
        return m.done(len(parts), fw.w2_check(frame))

    def w3(self, p: dict[str, Any]) -> dict[str, Any]:
        m = Meter()
        futs = self.client.map(fw.w3_task, range(p["n"]), pure=False)
        total = self.client.submit(fw.w3_combine, futs, pure=False).result()
        return m.done(p["n"] + 1, total)

    def w4(self, p: dict[str, Any]) -> dict[str, Any]:
        return _latency(lambda i: int(self.client.submit(fw.w4_echo, i, pure=False).result()),
                        p["k"])

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


class NbqueueAgent(Agent):
    """nbqueue from the tree on sys.path: a private redis-server, a process-mode worker
    (WORKERS children) and, for W4, a thread-mode worker on a second queue."""

    def __init__(self) -> None:
        import redis

        import nbqueue
        from bench.harness import RedisServer

        self.nbqueue_file = nbqueue.__file__
        self.server = RedisServer().start()
        self.r = redis.Redis.from_url(self.server.url)
        self.conn = nbqueue.connect(self.server.url)
        self.q = nbqueue.Queue("fanout", self.conn)
        self.qt = nbqueue.Queue("fanout-t", self.conn)
        self.worker = nbqueue.Worker("fanout", fw.nbq_process, self.conn, mode="process",
                                     processes=WORKERS, concurrency=WORKERS,
                                     dead_letter=False).start()
        self.tworker = nbqueue.Worker("fanout-t", fw.nbq_process, self.conn, mode="thread",
                                      concurrency=WORKERS, dead_letter=False).start()
        warm = self.q.map([{"type": "w4", "payload": {"x": i}} for i in range(WORKERS * 4)])
        warm.results(timeout=120)
        self.qt.add({"type": "w4", "payload": {"x": 0}}).result(timeout=60)
        # pandas imported in every child (as the pools' warm-up does)
        self.q.map(fw.w2_source(WORKERS * 20), chunksize=10, job_type="w2r").results(
            timeout=120)
        # does this tree store a DataFrame a processor returns (Arrow)? else records (JSON)
        try:
            got = self.q.add({"type": "probe_frame"}).result(timeout=60)
            self.frames = type(got).__name__ == "DataFrame"
        except Exception:
            self.frames = False
        self._clean()

    def _clean(self) -> None:
        for state in ("completed", "failed"):
            self.q.clean(0, 0, state)
            self.qt.clean(0, 0, state)

    def _cmds(self) -> int:
        total = 0
        for name, v in self.r.info("commandstats").items():
            if not name.startswith(("cmdstat_info", "cmdstat_config")):
                total += int(v["calls"])
        return total

    @contextmanager
    def _counted(self, out: dict[str, Any]) -> Iterator[None]:
        c0 = self._cmds()
        yield
        out["cmds"] = self._cmds() - c0

    def w1_chunked(self, p: dict[str, Any]) -> dict[str, Any]:
        items = [{"type": "w1", "payload": {"x": i}} for i in range(p["n"])]
        out: dict[str, Any] = {}
        with self._counted(out):
            m = Meter()
            batch = self.q.map(items, chunksize=p["chunksize"], job_type="chunk")
            values = batch.results(timeout=3600)
            res = m.done(len(batch), sum(sum(v) for v in values))
        self._clean()
        return {**res, **out}

    def w1_item(self, p: dict[str, Any]) -> dict[str, Any]:
        items = [{"type": "w1", "payload": {"x": i}} for i in range(p["n"])]
        out: dict[str, Any] = {}
        with self._counted(out):
            m = Meter()
            batch = self.q.add_bulk(items, remove_on_complete={"age": 3600})
            values = batch.results(timeout=3600)
            res = m.done(len(batch), sum(values))
        self._clean()
        return {**res, **out}

    def w2(self, p: dict[str, Any]) -> dict[str, Any]:
        df = fw.w2_source(p["rows"])
        kind = "w2f" if self.frames else "w2r"
        out: dict[str, Any] = {}
        with self._counted(out):
            m = Meter()
            batch = self.q.map(df, chunksize=p["chunk"], job_type=kind)
            frame = batch.results_frame(timeout=3600)
            res = m.done(len(batch), fw.w2_check(frame.reset_index(drop=True)),
                         results="frames" if self.frames else "records")
        self._clean()
        return {**res, **out}

    def w3(self, p: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with self._counted(out):
            m = Meter()
            batch = self.q.add_bulk([{"type": "w3", "payload": {"i": i}}
                                     for i in range(p["n"])])
            combine = self.q.add({"type": "w3c"}, depends_on=list(batch))
            total = combine.result(timeout=3600)
            res = m.done(p["n"] + 1, total)
        self._clean()
        return {**res, **out}

    def _w4(self, q: Any, p: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with self._counted(out):
            res = _latency(lambda i: int(q.add({"type": "w4", "payload": {"x": i}})
                                         .result(timeout=60)), p["k"])
        out["cmds"] = out["cmds"] * p["k"] // (p["k"] + W4_WARMUP)  # warm-up calls out
        self._clean()
        return {**res, **out}

    def w4(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._w4(self.q, p)

    def w4_thread(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._w4(self.qt, p)

    def close(self) -> None:
        self.worker.stop()
        self.tworker.stop()
        self.conn.close()
        self.server.stop()


def make(system: str) -> Agent:
    if system in ("ppe", "loky"):
        return ExecutorAgent(system)
    if system == "dask":
        return DaskAgent()
    if system == "nbqueue":
        return NbqueueAgent()
    raise SystemExit(f"unknown system {system!r}")


def serve(system: str) -> int:
    """The agent's loop: build the system (timed), then answer workloads until EOF."""
    t0 = time.perf_counter()
    try:
        agent = make(system)
    except Exception:
        _say({"error": traceback.format_exc()})
        return 1
    ready: dict[str, Any] = {"ready": time.perf_counter() - t0}
    if isinstance(agent, NbqueueAgent):
        ready.update(nbqueue=agent.nbqueue_file, frames=agent.frames)
    _say(ready)
    try:
        for line in sys.stdin:
            msg = json.loads(line)
            try:
                _say(agent.run(msg["workload"], msg["params"]))
            except Exception:
                _say({"error": traceback.format_exc()})
    finally:
        agent.close()
    return 0


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write("@@" + json.dumps(obj) + "\n")
    sys.stdout.flush()
