"""Fan-out from a notebook: nbqueue beside ProcessPoolExecutor, loky and dask.distributed.

``python -m bench.fanout`` (defaults finish in a few minutes on 2 shared cores;
``--reps 1 --w1-n 5000`` for a smoke run; ``--tree /work/base`` adds a second nbqueue, the
code of that checkout, interleaved with this one: a before/after in one run).

Method
------
* **Systems**, each in its own long-lived agent process (``python -m bench.fanout --agent
  SYSTEM``), all started before the first measurement and kept for the whole run, so every
  system's workers are warm (started, imports done, pandas loaded) before anything is timed:
  ``ProcessPoolExecutor(2)``; ``loky.get_reusable_executor(max_workers=2)``;
  ``dask.distributed`` ``LocalCluster(n_workers=2, threads_per_worker=1)`` + ``Client``;
  nbqueue: a private ``redis-server`` per nbqueue agent, ``Worker(mode="process",
  processes=2)`` started in the agent (as a notebook does: its engine is a thread of the
  notebook process, the bodies run in 2 children), plus a ``mode="thread"`` worker on a
  second queue for W4. Each nbqueue agent imports nbqueue from its tree (``--tree``: the
  agent's ``PYTHONPATH`` is that checkout; the report shows the file it imported).
* **Workloads** (the same functions in every system, ``bench/fanout_work.py``):
  W1 20,000 calls of ~20 µs: *chunked* (pools: ``map(chunksize=1000)``; dask: one task per
  1,000-item chunk; nbqueue: ``Queue.map(items, chunksize=1000)``) and *one job per item*
  (pools: ``map(chunksize=1)``; dask: ``client.map``; nbqueue: ``add_bulk`` of 20,000 jobs);
  W2 a 200,000-row DataFrame in 200 chunks of 1,000 rows, ~5 ms of pandas each, gathered
  into one frame (pools/dask: ``map`` over ``df.iloc`` slices + ``pd.concat``; nbqueue:
  ``Queue.map(df, chunksize=1000)`` + ``results_frame()``; the processor returns the frame
  where the tree stores frames, else ``to_dict("records")``), and W2b the same 200k rows in
  20 chunks of 10,000; W3 100 tasks of ~50 ms of CPU, then one combine that depends on all
  of them (pools: ``submit`` each, then ``submit(combine, results)``; dask: the combine takes
  the futures; nbqueue: ``add_bulk`` + ``add(depends_on=batch)``); W4 one round trip on warm
  workers, 200 sequential calls after 10 dropped (pools: ``submit().result()``; dask:
  ``client.submit().result()``; nbqueue: ``add().result()``, process and thread mode), p50.
* **Interleaved**: each repetition runs each workload on every system back to back (order
  rotated per repetition), so a load change on the shared machine hits all systems alike.
  Reported: the median wall time over repetitions and the median (and range) of the ratio
  to the best system *of the same repetition*. Results are checked equal across systems.
* **Costs per job**: *waiter CPU* is ``time.thread_time()`` of the agent's main thread (the
  notebook code that adds and waits); *process CPU* is ``time.process_time()`` of the agent
  (for nbqueue that includes its worker engine thread, as in a kernel that runs
  ``start_worker``; pool and dask workers are other processes); *Redis commands* is the
  ``INFO commandstats`` delta of the nbqueue agent's own server (commands inside scripts
  included, the INFO calls themselves excluded), idle background (heartbeats) included.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
PEERS = {"ppe": "ProcessPool", "loky": "loky", "dask": "dask"}
WORKLOADS = ("w1_chunked", "w1_item", "w2", "w2_big", "w3", "w4")


def titles(params: dict[str, dict[str, Any]]) -> dict[str, str]:
    p = params
    return {
        "w1_chunked": f"W1 {p['w1_chunked']['n']:,} x 20 µs, chunks of "
                      f"{p['w1_chunked']['chunksize']:,}",
        "w1_item": f"W1 {p['w1_item']['n']:,} x 20 µs, one job per item",
        "w2": f"W2 {p['w2']['rows'] // p['w2']['chunk']} x {p['w2']['chunk']:,}-row pandas "
              "chunks -> one frame",
        "w2_big": f"W2b {p['w2_big']['rows'] // p['w2_big']['chunk']} x "
                  f"{p['w2_big']['chunk']:,}-row chunks -> one frame",
        "w3": f"W3 {p['w3']['n']} x 50 ms + combine",
        "w4": "W4 round trip p50 (warm)",
    }


@dataclass
class AgentProc:
    """One agent subprocess and the ``@@`` replies its stdout yields."""

    label: str
    system: str
    tree: str | None
    proc: subprocess.Popen[str]
    log: TextIO
    replies: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    ready: dict[str, Any] = field(default_factory=dict)

    def pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@"):
                self.replies.put(json.loads(line[2:]))
            else:
                self.log.write(line)
        self.replies.put({"error": f"agent exited ({self.proc.wait()})"})

    def reply(self, timeout: float) -> dict[str, Any]:
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            return {"error": f"no reply in {timeout:.0f}s"}

    def ask(self, workload: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"workload": workload, "params": params}) + "\n")
        self.proc.stdin.flush()
        return self.reply(timeout)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def spawn(label: str, system: str, tree: str | None) -> AgentProc:
    """Start an agent. An nbqueue agent gets ``PYTHONPATH = <dir with only bench/> : tree``,
    so ``bench`` is this checkout's and ``nbqueue`` the tree's (children inherit both)."""
    env = dict(os.environ)
    cwd = str(REPO)
    if system == "nbqueue":
        shim = tempfile.mkdtemp(prefix="nbq-fanout-")
        os.symlink(BENCH_DIR, os.path.join(shim, "bench"))
        env["PYTHONPATH"] = os.pathsep.join([shim, tree or str(REPO)])
        cwd = shim
    else:
        env["PYTHONPATH"] = str(REPO)
    (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
    log = open(RESULTS / "logs" / f"fanout-{label.replace(' ', '_')}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "bench.fanout", "--agent", system],
                            cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log, text=True, bufsize=1)
    agent = AgentProc(label, system, tree, proc, log)
    threading.Thread(target=agent.pump, daemon=True).start()
    return agent


def params_of(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "w1_chunked": {"n": a.w1_n, "chunksize": a.w1_chunksize},
        "w1_item": {"n": a.w1_n},
        "w2": {"rows": a.w2_rows, "chunk": a.w2_chunk},
        "w2_big": {"rows": a.w2_rows, "chunk": a.w2_rows // 20},
        "w3": {"n": a.w3_n},
        "w4": {"k": a.w4_k},
    }


def entries(agents: list[AgentProc], workload: str) -> list[tuple[str, AgentProc, str]]:
    """(row label, agent, agent method) of one workload."""
    method = "w2" if workload == "w2_big" else workload
    out = []
    for ag in agents:
        if workload == "w4" and ag.system == "nbqueue":
            out.append((ag.label + " process", ag, "w4"))
            out.append((ag.label + " thread", ag, "w4_thread"))
        else:
            out.append((ag.label, ag, method))
    return out


def metric(res: dict[str, Any], workload: str) -> float:
    return float(res["p50"] if workload == "w4" else res["t"])


def run(a: argparse.Namespace) -> dict[str, Any]:
    systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    specs: list[tuple[str, str, str | None]] = []
    for s in systems:
        specs.append(("nbqueue" if s == "nbqueue" else PEERS[s], s, None))
    for t in a.tree:
        label, _, path = t.rpartition("=")
        path = os.path.abspath(path)
        specs.append((f"nbqueue[{label or os.path.basename(path.rstrip('/'))}]", "nbqueue",
                      path))
    agents = [spawn(label, system, tree) for label, system, tree in specs]
    try:
        for ag in agents:
            ag.ready = ag.reply(a.timeout)
            if "error" in ag.ready:
                raise SystemExit(f"{ag.label} did not start: {ag.ready['error']}")
            want = ag.tree or str(REPO)
            if ag.system == "nbqueue" and not ag.ready["nbqueue"].startswith(want):
                raise SystemExit(f"{ag.label} imported {ag.ready['nbqueue']}, not {want}")
            print(f"[fanout] {ag.label} ready in {ag.ready['ready']:.2f}s "
                  f"{ag.ready.get('nbqueue', '')}", flush=True)
        workloads = [w for w in a.workloads.split(",") if w]
        params = params_of(a)
        raw: dict[str, dict[str, list[dict[str, Any]]]] = {w: {} for w in workloads}
        for rep in range(a.reps):
            for wi, w in enumerate(workloads):
                rows = entries(agents, w)
                k = (rep + wi) % len(rows)
                for label, ag, method in rows[k:] + rows[:k]:
                    res = ag.ask(method, params[w], a.timeout)
                    res["rep"] = rep
                    raw[w].setdefault(label, []).append(res)
                    shown = (f"{res['p50'] * 1e3:.2f} ms p50" if "p50" in res else
                             f"{res['t']:.2f}s" if "t" in res else res.get("error", "?"))
                    print(f"[fanout] rep {rep + 1} {w} {label}: {shown}", flush=True)
    finally:
        for ag in agents:
            ag.close()
    return {"raw": raw, "agents": {ag.label: ag.ready for ag in agents},
            "params": params, "reps": a.reps, "cores": os.cpu_count()}


def summarize(data: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per workload and row: median metric, ratio to the best of each rep, costs per job."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for w, rows in data["raw"].items():
        ok = {label: [r for r in rs if "error" not in r and "skip" not in r]
              for label, rs in rows.items()}
        checks = {json.dumps(_zeroed(r.get("check"))) for rs in ok.values() for r in rs}
        best: dict[int, float] = {}
        for rs in ok.values():
            for r in rs:
                best[r["rep"]] = min(best.get(r["rep"], float("inf")), metric(r, w))
        out[w] = {}
        for label, rs in rows.items():
            good = ok[label]
            if not good:
                out[w][label] = {"error": (rs[0].get("error") or rs[0].get("skip", "?"))[-300:]}
                continue
            ratios = [metric(r, w) / best[r["rep"]] for r in good]
            jobs = good[0]["jobs"]
            med = statistics.median
            out[w][label] = {
                "metric": med([metric(r, w) for r in good]),
                "ratio": med(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                "reps": len(good), "jobs": jobs,
                "cpu_main_us": med([r["cpu_main"] for r in good]) / jobs * 1e6,
                "cpu_proc_us": med([r["cpu_proc"] for r in good]) / jobs * 1e6,
                "cmds": med([r["cmds"] / jobs for r in good]) if "cmds" in good[0] else None,
                "checks_agree": len(checks) == 1,
                "results": good[0].get("results"),
            }
    return out


def _zeroed(check: Any) -> Any:
    """-0.0 -> 0.0 in a checksum (a sum of standardised values rounds to either)."""
    if isinstance(check, list):
        return [x + 0.0 if isinstance(x, float) else x for x in check]
    return check


def render(summary: dict[str, dict[str, dict[str, Any]]], data: dict[str, Any]) -> str:
    names = titles(data["params"])
    labels: list[str] = []
    for rows in summary.values():
        for label in rows:
            base = label.removesuffix(" process").removesuffix(" thread")
            if base not in labels:
                labels.append(base)
    lines = [f"{data['reps']} repetitions, interleaved; {data['cores']} cores; ratio = time / "
             "best system of the same repetition (median, [min-max]); time = median "
             "(W4: p50 of the round trip)", "",
             "| workload | " + " | ".join(labels) + " |",
             "|---|" + "---:|" * len(labels)]
    for w, rows in summary.items():
        cells = []
        for base in labels:
            found = [(label, m) for label, m in rows.items()
                     if label.removesuffix(" process").removesuffix(" thread") == base]
            parts = []
            for label, m in found:
                mode = label[len(base):].strip()
                if "error" in m:
                    parts.append(f"{mode} error".strip())
                    continue
                t = (f"{m['metric'] * 1e3:.2f} ms" if w == "w4" else f"{m['metric']:.2f}s")
                parts.append(f"{mode} {t} {m['ratio']:.2f}x [{m['ratio_min']:.2f}-"
                             f"{m['ratio_max']:.2f}]".strip())
            cells.append("<br>".join(parts) or "-")
        lines.append(f"| {names.get(w, w)} | " + " | ".join(cells) + " |")
    lines += ["", "| workload | system | jobs | waiter CPU µs/job | process CPU µs/job | "
              "Redis cmds/job | results equal |", "|---|---|---:|---:|---:|---:|---|"]
    for w, rows in summary.items():
        for label, m in sorted(rows.items()):
            if "error" in m:
                lines.append(f"| {w} | {label} | error: {m['error'].splitlines()[-1]} "
                             "| | | | |")
                continue
            cmds = f"{m['cmds']:.1f}" if m["cmds"] is not None else "-"
            lines.append(f"| {w} | {label} | {m['jobs']} | {m['cpu_main_us']:.0f} | "
                         f"{m['cpu_proc_us']:.0f} | {cmds} | "
                         f"{'yes' if m['checks_agree'] else 'NO'} |")
    starts = ", ".join(f"{k} {v.get('ready', 0):.2f}s" for k, v in data["agents"].items())
    lines += ["", f"Start-up to warm (s): {starts}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=3, help="repetitions (3)")
    p.add_argument("--systems", default="nbqueue,ppe,loky,dask",
                   help="comma list of nbqueue, ppe, loky, dask (all)")
    p.add_argument("--tree", action="append", default=[], metavar="[LABEL=]PATH",
                   help="also run nbqueue from this checkout (repeatable)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=",".join(WORKLOADS))
    p.add_argument("--w1-n", type=int, default=20_000)
    p.add_argument("--w1-chunksize", type=int, default=1000)
    p.add_argument("--w2-rows", type=int, default=200_000)
    p.add_argument("--w2-chunk", type=int, default=1000)
    p.add_argument("--w3-n", type=int, default=100)
    p.add_argument("--w4-k", type=int, default=200)
    p.add_argument("--timeout", type=float, default=900.0, help="per workload (900 s)")
    p.add_argument("--json", default=str(RESULTS / "fanout-latest.json"))
    p.add_argument("--render", metavar="JSON", help="only print the tables of a saved run")
    a = p.parse_args(argv)
    if a.render:
        data = json.loads(Path(a.render).read_text())
        print(render(summarize(data), data))
        return 0
    if a.agent:
        from bench.fanout_agents import serve

        return serve(a.agent)
    t0 = time.perf_counter()
    data = run(a)
    summary = summarize(data)
    data["summary"] = summary
    table = render(summary, data)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(data, indent=1, default=str))
    print(table)
    print(f"\n[fanout] {time.perf_counter() - t0:.0f}s; raw results in {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
