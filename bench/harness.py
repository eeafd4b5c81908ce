"""Benchmark harness: private redis-server, subprocess orchestration, stats and tables.

Everything that touches a system under test runs in a subprocess (``python -m bench.agent``):
producers and workers alike, so no system shares a GIL with the harness or with another
system, and peers can live in their own interpreter (``bench/.venv-peers``). The harness
itself only talks to Redis to FLUSHALL, read INFO and poll the completion counter.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import jobs

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
PEERS_VENV_PY = BENCH_DIR / ".venv-peers" / "bin" / "python"
PEERS = ("rq", "arq", "saq", "dramatiq", "huey", "bullmq")
ALL_SYSTEMS = ("raw", "nbqueue", *PEERS)
POLL_S = 0.002


# ----------------------------------------------------------------------------- redis server
def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 6379:
            return port


class RedisServer:
    """A private, non-persistent redis-server on a free loopback port (never 6379)."""

    def __init__(self, binary: str = "redis-server") -> None:
        exe = shutil.which(binary)
        if exe is None:
            raise SystemExit("redis-server not found on PATH")
        self.exe = exe
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nbq-bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
             "--loglevel", "warning", "--maxclients", "10000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        r = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                r.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise SystemExit("private redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def version(self) -> str:
        return str(redis.Redis(port=self.port).info("server")["redis_version"])


# ----------------------------------------------------------------------------- redis stats
@dataclass
class Snapshot:
    cpu: float


def reset_stats(r: redis.Redis) -> Snapshot:
    r.config_resetstat()
    info = r.info("cpu")
    return Snapshot(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))


def command_count(r: redis.Redis, own_gets: int = 0) -> int:
    """Commands executed since the last RESETSTAT (commands inside scripts included),
    minus the harness's own INFO/CONFIG calls and its ``own_gets`` counter polls."""
    stats = r.info("commandstats")
    total = 0
    for name, v in stats.items():
        cmd = name.removeprefix("cmdstat_")
        if cmd in ("info", "config") or cmd.startswith(("info|", "config|")):
            continue
        total += int(v["calls"])
    return max(0, total - own_gets)


def cpu_now(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# ----------------------------------------------------------------------------- subprocesses
@dataclass
class Runner:
    server: RedisServer
    peers_python: str
    timeout: float
    log_dir: Path
    notes: list[str] = field(default_factory=list)

    def python_for(self, system: str) -> str:
        return self.peers_python if system in PEERS else sys.executable

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["BENCH_REDIS_URL"] = self.server.url
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def cmd(self, system: str, role: str, *extra: str) -> list[str]:
        return [self.python_for(system), "-m", "bench.agent", system, role, *extra]

    def agent(self, system: str, role: str, *extra: str, timeout: float | None = None
              ) -> dict[str, Any]:
        log = self.log_dir / f"{system}-{role}.log"
        limit = timeout or self.timeout
        proc = subprocess.Popen(
            self.cmd(system, role, *extra), cwd=REPO, env=self.env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            stop_group(proc, grace=1.0)
            return {"error": f"timeout after {limit:.0f}s"}
        cp = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        log.write_text(cp.stdout + "\n--- stderr ---\n" + cp.stderr)
        for line in reversed(cp.stdout.splitlines()):
            if line.startswith("BENCHRESULT "):
                return dict(json.loads(line[len("BENCHRESULT "):]))
        tail = (cp.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {cp.returncode}: {tail[:200]}"}

    @contextlib.contextmanager
    def worker(self, system: str, mode: str, tag: str) -> Iterator[subprocess.Popen[bytes]]:
        log = open(self.log_dir / f"{system}-{mode}-{tag}-worker.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            self.cmd(system, "worker", "--mode", mode), cwd=REPO, env=self.env(),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop_group(proc)
            log.close()


def stop_group(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """Stop a worker we started and any children in its own process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(2)


# ----------------------------------------------------------------------------- scenarios
Metrics = dict[str, float | None]


def scenario_add(run: Runner, r: redis.Redis, system: str, role: str, n: int) -> Metrics:
    r.flushall()
    snap = reset_stats(r)
    res = run.agent(system, role, "--n", str(n))
    if "skip" in res or "error" in res:
        return {"_note": res.get("skip") or res.get("error")}  # type: ignore[dict-item]
    cmds = command_count(r)
    cpu = cpu_now(r) - snap.cpu
    secs = float(res["seconds"])
    return {"rate": n / secs if secs > 0 else None, "cmds": cmds / n, "cpu_us": cpu / n * 1e6}


def scenario_drain(run: Runner, r: redis.Redis, system: str, mode: str, n: int) -> Metrics:
    r.flushall()
    res = run.agent(system, "preload", "--n", str(n))
    if "skip" in res or "error" in res:
        return {"_note": res.get("skip") or res.get("error")}  # type: ignore[dict-item]
    snap = reset_stats(r)
    polls = 0
    t_launch = time.perf_counter()
    t0: float | None = None
    c0 = 0
    c = 0
    note: str | None = None
    with run.worker(system, mode, "drain") as proc:
        deadline = t_launch + run.timeout
        while True:
            v = r.get(jobs.COUNTER)
            polls += 1
            now = time.perf_counter()
            c = int(v or 0)
            if c and t0 is None:
                t0, c0 = now, c
            if c >= n:
                break
            if proc.poll() is not None:
                note = f"worker exited with {proc.returncode} after {c}/{n} jobs"
                break
            if now > deadline:
                note = f"timeout after {run.timeout:.0f}s at {c}/{n} jobs"
                break
            time.sleep(POLL_S)
        t1 = time.perf_counter()
        cmds = command_count(r, own_gets=polls)
        cpu = cpu_now(r) - snap.cpu
        time.sleep(0.5)  # let stragglers land, so duplicates show up
        final = int(r.get(jobs.COUNTER) or 0)
    done = max(c - c0, 0)
    rate = done / (t1 - t0) if t0 is not None and t1 > t0 and done else None
    out: Metrics = {
        "rate": rate,
        "wall_s": t1 - t_launch,
        "cmds": cmds / max(c, 1),
        "cpu_us": cpu / max(c, 1) * 1e6,
        "lost": float(max(0, n - final)),
        "dup": float(max(0, final - n)),
    }
    if note:
        out["_note"] = note  # type: ignore[assignment]
    return out


def scenario_latency(run: Runner, r: redis.Redis, system: str, mode: str, k: int,
                     budget: float) -> Metrics:
    r.flushall()
    with run.worker(system, mode, "latency") as proc:
        res = run.agent(system, "latency", "--n", str(k), "--budget", str(budget),
                        timeout=budget + 120)
        alive = proc.poll() is None
    if "skip" in res or "error" in res:
        msg = res.get("skip") or res.get("error")
        if not alive:
            msg = f"{msg} (worker exited)"
        return {"_note": msg}  # type: ignore[dict-item]
    s = sorted(float(x) for x in res["samples"])
    return {"p50_ms": pct(s, 50) * 1e3, "p95_ms": pct(s, 95) * 1e3, "samples": float(len(s))}


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(p / 100 * (len(sorted_vals) - 1))))
    return sorted_vals[i]


# ----------------------------------------------------------------------------- aggregation
def median(vals: list[float | None]) -> float | None:
    xs = [v for v in vals if v is not None]
    return statistics.median(xs) if xs else None


@dataclass
class SystemResult:
    name: str
    python: str
    version: str | None = None
    skip: str | None = None
    modes: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    reps: dict[str, list[Metrics]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, m: Metrics) -> None:
        note = m.pop("_note", None)
        if note:
            msg = f"{key}: {note}"
            if msg not in self.notes:
                self.notes.append(msg)
        if m:
            self.reps.setdefault(key, []).append(m)

    def med(self, key: str, metric: str) -> float | None:
        return median([m.get(metric) for m in self.reps.get(key, [])])


def summarize(results: dict[str, SystemResult]) -> dict[str, dict[str, dict[str, float | None]]]:
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, sr in results.items():
        out[name] = {}
        for key, reps in sr.reps.items():
            metrics = sorted({k for m in reps for k in m})
            out[name][key] = {k: sr.med(key, k) for k in metrics}
    return out


# ----------------------------------------------------------------------------- table
def fmt(v: float | None, kind: str = "rate") -> str:
    if v is None:
        return "-"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v:.2f}" if v < 10 else f"{v:,.0f}"
    if kind == "x":
        return f"{v:.2f}x"
    if kind == "int":
        return f"{v:.0f}"
    if kind == "f2":
        return f"{v:.2f}"
    return f"{v:.1f}"


# Which body ceiling bounds a worker: asyncio workers await their INCR, the rest run it on
# threads (nbqueue's process mode runs a thread engine in its child process).
ASYNC_PEERS = ("arq", "saq", "bullmq")


def ceiling_of(system: str, mode: str) -> str:
    if system in ASYNC_PEERS or (system, mode) == ("nbqueue", "asyncio"):
        return "ceiling-async"
    return "ceiling-threads"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def render(summary: dict[str, dict[str, dict[str, float | None]]],
           results: dict[str, SystemResult], meta: dict[str, Any]) -> str:
    S = summary

    def g(sys_: str, key: str, metric: str) -> float | None:
        return S.get(sys_, {}).get(key, {}).get(metric)

    raw_add = g("raw", "add_single", "rate")
    raw_aadd = g("raw", "add_async", "rate")
    raw_bulk = g("raw", "add_bulk", "rate")
    raw_rt1 = g("raw", "drain:rt1", "rate")
    raw_lat = g("raw", "lat:rt1", "p50_ms")

    def best_peer(key_prefix: str, metric: str, lower: bool = False) -> tuple[float | None, str]:
        best: tuple[float | None, str] = (None, "")
        for p in PEERS:
            for key, m in S.get(p, {}).items():
                if key.split(":")[0] != key_prefix or m.get(metric) is None:
                    continue
                v = m[metric]
                assert v is not None
                if best[0] is None or (v < best[0] if lower else v > best[0]):
                    best = (v, p)
        return best

    bp_add = best_peer("add_single", "rate")
    bp_aadd = best_peer("add_async", "rate")
    bp_bulk = best_peer("add_bulk", "rate")
    bp_drain = best_peer("drain", "rate")
    bp_lat = best_peer("lat", "p50_ms", lower=True)

    lines: list[str] = []
    lines.append(
        f"N={meta['n']} jobs, reps={meta['reps']} (medians), {meta['cores']} cores "
        f"({meta['cpu']}), Python {meta['python']}, Redis {meta['redis']}, "
        f"nbqueue at {meta.get('commit') or '?'}, {meta['date']}."
    )
    lines.append("")
    lines.append("| system | worker | add/s sync | add/s async | bulk add/s | drain jobs/s "
                 "| lost/dup | lat p50 ms | lat p95 ms | cmds/job add (1 by 1) | cmds/job drain "
                 "| Redis CPU µs/job drain |")
    lines.append("|" + "---|" * 12)
    for name, sr in results.items():
        if sr.skip:
            lines.append(f"| {name} | - | skipped: {sr.skip} |" + " |" * 9)
            continue
        modes = sr.modes or ["default"]
        for i, mode in enumerate(modes):
            first = i == 0
            d, lat = f"drain:{mode}", f"lat:{mode}"
            lost, dup = g(name, d, "lost"), g(name, d, "dup")
            ld = "-" if lost is None else f"{lost:.0f}/{dup or 0:.0f}"
            lines.append("| " + " | ".join([
                name if first else "",
                mode,
                fmt(g(name, "add_single", "rate")) if first else "",
                fmt(g(name, "add_async", "rate")) if first else "",
                fmt(g(name, "add_bulk", "rate")) if first else "",
                fmt(g(name, d, "rate")),
                ld,
                fmt(g(name, lat, "p50_ms"), "ms"),
                fmt(g(name, lat, "p95_ms"), "ms"),
                fmt(g(name, "add_single", "cmds") or g(name, "add_async", "cmds"), "f2")
                if first else "",
                fmt(g(name, d, "cmds"), "f2"),
                fmt(g(name, d, "cpu_us"), "f"),
            ]) + " |")
    lines.append("")
    lines.append("Raw rows: add = `LPUSH` one at a time (sync / `redis.asyncio`), bulk = "
                 "pipelined `LPUSH` in batches of 100; workers `rt1` = BLMOVE reliable consumer "
                 "with one queue round trip per job (ack + fetch-next pipelined), `classic` = "
                 "BLMOVE, INCR, LREM as 3 calls, `batch` = `RPOP 100` + one `INCRBY` per batch; "
                 "`ceiling-async` / `ceiling-threads` = no queue at all, just the N job bodies "
                 "(one `INCR` each) from 10 asyncio tasks / 10 threads in one process: the "
                 "fastest any queue's drain with that body can be here.")
    lines.append("")
    lines.append("Ratios (system ÷ raw floor, and ÷ best peer in that scenario; latency: "
                 "lower is better):")
    lines.append("")
    lines.append("| system | worker | add ÷ raw LPUSH | async add ÷ raw async "
                 "| bulk ÷ raw pipelined | drain ÷ raw rt1 | drain ÷ raw batch "
                 "| drain ÷ best peer | drain ÷ body ceiling | lat p50 ÷ raw rt1 |")
    lines.append("|" + "---|" * 10)
    raw_batch = g("raw", "drain:batch", "rate")
    for name, sr in results.items():
        if sr.skip or name == "raw":
            continue
        for i, mode in enumerate(sr.modes or ["default"]):
            first = i == 0
            dr = g(name, f"drain:{mode}", "rate")
            lines.append("| " + " | ".join([
                name if first else "", mode,
                fmt(ratio(g(name, "add_single", "rate"), raw_add), "x") if first else "",
                fmt(ratio(g(name, "add_async", "rate"), raw_aadd), "x") if first else "",
                fmt(ratio(g(name, "add_bulk", "rate"), raw_bulk), "x") if first else "",
                fmt(ratio(dr, raw_rt1), "x"),
                fmt(ratio(dr, raw_batch), "x"),
                fmt(ratio(dr, bp_drain[0]), "x"),
                fmt(ratio(dr, g("raw", f"drain:{ceiling_of(name, mode)}", "rate")), "x"),
                fmt(ratio(g(name, f"lat:{mode}", "p50_ms"), raw_lat), "x"),
            ]) + " |")
    lines.append("")
    lines.append(
        f"Best peer per scenario: add {bp_add[1] or '-'} ({fmt(bp_add[0])}/s), "
        f"async add {bp_aadd[1] or '-'} ({fmt(bp_aadd[0])}/s), "
        f"bulk {bp_bulk[1] or '-'} ({fmt(bp_bulk[0])}/s), "
        f"drain {bp_drain[1] or '-'} ({fmt(bp_drain[0])}/s), "
        f"latency p50 {bp_lat[1] or '-'} ({fmt(bp_lat[0], 'ms')} ms)."
    )
    lines.append("")
    lines.extend(render_bar(S, results, raw_add, raw_bulk, raw_rt1, raw_lat, bp_drain))
    notes = [f"- {name}: {n}" for name, sr in results.items() for n in sr.notes]
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines) + "\n"


def render_bar(S: dict[str, dict[str, dict[str, float | None]]],
               results: dict[str, SystemResult], raw_add: float | None,
               raw_bulk: float | None, raw_rt1: float | None, raw_lat: float | None,
               bp_drain: tuple[float | None, str]) -> list[str]:
    nb = S.get("nbqueue", {})
    sr = results.get("nbqueue")
    lines = ["The bar (nbqueue, same run):", "",
             "| check | measured | target | result |", "|---|---|---|---|"]

    def row(check: str, value: float | None, target: str, ok: bool | None,
            kind: str = "x") -> None:
        res = "pending" if value is None else ("PASS" if ok else "FAIL")
        lines.append(f"| {check} | {fmt(value, kind)} | {target} | {res} |")

    modes = (sr.modes if sr and not sr.skip and sr.modes else ["thread", "asyncio", "process"])
    for mode in modes:
        v = ratio(nb.get(f"drain:{mode}", {}).get("rate"), bp_drain[0])
        row(f"drain ({mode}) ÷ fastest peer ({bp_drain[1] or '-'})", v, ">= 5x",
            v is not None and v >= 5)
    for mode in modes:
        v = ratio(nb.get(f"drain:{mode}", {}).get("rate"), raw_rt1)
        row(f"drain ({mode}) ÷ raw 1-RTT consumer", v, ">= 3x", v is not None and v >= 3)
    v = ratio(nb.get("add_single", {}).get("rate"), raw_add)
    row("single add (sync) ÷ raw LPUSH", v, ">= 0.8x", v is not None and v >= 0.8)
    v = ratio(nb.get("add_bulk", {}).get("rate"), raw_bulk)
    row("bulk add ÷ raw pipelined LPUSH", v, ">= 0.5x", v is not None and v >= 0.5)
    for mode in modes:
        v = ratio(nb.get(f"lat:{mode}", {}).get("p50_ms"), raw_lat)
        row(f"latency p50 ({mode}) ÷ raw BLMOVE p50", v, "<= 1.5x", v is not None and v <= 1.5)
    target = 5 * bp_drain[0] if bp_drain[0] else None
    for mode in modes:
        ceil = S.get("raw", {}).get(f"drain:{ceiling_of('nbqueue', mode)}", {}).get("rate")
        v = ratio(nb.get(f"drain:{mode}", {}).get("rate"), ceil)
        note = "" if not (ceil and target) else (
            f" (ceiling {fmt(ceil)}/s; the 5x-peer target {fmt(target)}/s is "
            f"{'above' if target > ceil else 'below'} it)")
        lines.append(f"| drain ({mode}) ÷ body ceiling{note} | {fmt(v, 'x')} | "
                     "(context) | - |")
    for mode in modes:
        v = nb.get(f"drain:{mode}", {}).get("cmds")
        row(f"Redis commands per job, drain ({mode})", v, "<= 8", v is not None and v <= 8,
            "f")
    return lines


# ----------------------------------------------------------------------------- main
def write_readme(table: str) -> None:
    path = BENCH_DIR / "README.md"
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = path.read_text() if path.exists() else f"# nbqueue benchmarks\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{table}{end}{tail}")


def git_commit() -> str | None:
    """Short HEAD of the repo, with ``+dirty`` when nbqueue/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "nbqueue"], cwd=REPO,
                               text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{'+dirty' if dirty else ''}" if head else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--n", type=int, default=20000, help="jobs per scenario")
    p.add_argument("--reps", type=int, default=3, help="repetitions (medians reported)")
    p.add_argument("--systems", default=",".join(ALL_SYSTEMS),
                   help=f"comma list out of {','.join(ALL_SYSTEMS)}")
    p.add_argument("--lat-n", type=int, default=500, help="sequential latency jobs")
    p.add_argument("--lat-budget", type=float, default=15.0,
                   help="stop latency sampling after this many seconds (>=30 samples)")
    p.add_argument("--timeout", type=float, default=300.0, help="hard timeout per scenario (s)")
    p.add_argument("--peers-python", default=None,
                   help="interpreter for peers (default: bench/.venv-peers if present)")
    p.add_argument("--out", default=str(RESULTS / "latest.json"))
    p.add_argument("--write-readme", action="store_true",
                   help="also replace the results section of bench/README.md")
    a = p.parse_args(argv)

    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in ALL_SYSTEMS]
    if bad:
        p.error(f"unknown systems {bad}")
    peers_python = a.peers_python or (str(PEERS_VENV_PY) if PEERS_VENV_PY.exists()
                                      else sys.executable)
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / "logs"
    log_dir.mkdir(exist_ok=True)

    server = RedisServer().start()
    try:
        run = Runner(server, peers_python, a.timeout, log_dir)
        r = redis.Redis.from_url(server.url)
        results: dict[str, SystemResult] = {}
        for s in systems:
            sr = SystemResult(s, run.python_for(s))
            info = run.agent(s, "info", timeout=120)
            if "error" in info:
                sr.skip = f"adapter failed to load: {info['error']}"
            else:
                sr.version = info.get("version")
                sr.modes = list(info.get("modes") or ["default"])
                sr.roles = list(info.get("roles") or [])
                sr.skip = info.get("skip")
            results[s] = sr
            status = f"skip ({sr.skip})" if sr.skip else f"{sr.version} modes={sr.modes}"
            print(f"[bench] {s}: {status}", flush=True)

        for rep in range(a.reps):
            for s, sr in results.items():
                if sr.skip:
                    continue
                for role in ("add_single", "add_async", "add_bulk"):
                    if role not in sr.roles:
                        continue
                    m = scenario_add(run, r, s, role, a.n)
                    sr.add(role, m)
                    print(f"[bench] rep {rep + 1} {s} {role}: {_short(m)}", flush=True)
                for mode in sr.modes:
                    if "worker" not in sr.roles:
                        break
                    m = scenario_drain(run, r, s, mode, a.n)
                    sr.add(f"drain:{mode}", m)
                    print(f"[bench] rep {rep + 1} {s} drain {mode}: {_short(m)}", flush=True)
                    if mode.startswith("ceiling"):
                        continue  # the body alone: nothing to enqueue, so no latency
                    m = scenario_latency(run, r, s, mode, a.lat_n, a.lat_budget)
                    sr.add(f"lat:{mode}", m)
                    print(f"[bench] rep {rep + 1} {s} latency {mode}: {_short(m)}", flush=True)
                for role in ("add_single", "add_async", "add_bulk", "worker"):
                    if role not in sr.roles and role != "worker":
                        note = f"{role}: no such API in {s}"
                        if note not in sr.notes:
                            sr.notes.append(note)

        meta = {
            "n": a.n, "reps": a.reps, "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "redis": server.version(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "lat_n": a.lat_n, "peers_python": peers_python, "commit": git_commit(),
        }
        summary = summarize(results)
        table = render(summary, results, meta)
        payload = {
            "meta": meta, "summary": summary,
            "systems": {k: {"version": v.version, "skip": v.skip, "modes": v.modes,
                            "python": v.python, "notes": v.notes, "reps": v.reps}
                        for k, v in results.items()},
            "table": table,
        }
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(payload, indent=2))
        (Path(a.out).with_suffix(".md")).write_text(table)
        print()
        print(table)
        print(f"[bench] results: {a.out}")
        if a.write_readme:
            write_readme(table)
            print("[bench] bench/README.md updated")
    finally:
        server.stop()
    return 0


def _short(m: Metrics) -> str:
    parts = []
    for k, v in m.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:,.2f}")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts) or "-"
