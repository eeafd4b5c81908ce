"""A real Prometheus scrapes a live ``nbqueue metrics`` endpoint while workers run; every
PromQL expression of ``contrib/grafana/nbqueue.json`` and ``contrib/prometheus/alerts.yml``
must parse and return data, every alert must fire on a scenario made to trigger it, and
``promtool check rules`` must pass. Needs Debian's ``prometheus`` package (``.ci/run``
installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redisproc import free_port

from nbqueue import Queue, Worker
from nbqueue.connection import Connection
from nbqueue.metrics import make_metrics_server

from .helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "contrib" / "grafana" / "nbqueue.json"
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"
KEDA = ROOT / "contrib" / "keda"

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian's prometheus package is not installed (.ci/run installs it)")


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    """(alert name, expr) of every rule (a small reader for this file's layout)."""
    text = ALERTS.read_text()
    out = []
    for block in re.split(r"\n\s*- alert: ", text)[1:]:
        name = block.split("\n", 1)[0].strip()
        m = re.search(r"expr: \|\n((?:\s{10}.*\n)+)|expr: (.*)\n", block)
        assert m, name
        expr = m.group(1) if m.group(1) else m.group(2)
        out.append((name, " ".join(line.strip() for line in expr.splitlines())))
    return out


def keda_queries() -> list[tuple[str, str]]:
    """(file, query) of every prometheus trigger of contrib/keda/*.yaml."""
    import yaml

    out = []
    for path in sorted(KEDA.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for trigger in (doc or {}).get("spec", {}).get("triggers", []):
                if trigger["type"] == "prometheus":
                    out.append((path.name, trigger["metadata"]["query"]))
    return out


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends for the dashboard's variables: every queue, a 30 s window."""
    return expr.replace("$queue", ".*").replace("$__rate_interval", "30s")


def test_dashboard_shape() -> None:
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["queue"]["query"]["query"] == "label_values(nbqueue_queue_jobs, queue)"
    assert variables["queue"]["includeAll"] and variables["queue"]["allValue"] == ".*"
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("throughput", "errors by type", "p95", "wait time", "jobs by state",
                  "by priority", "workers online", "oldest waiting", "dead-letter growth"):
        assert topic in titles, topic
    exprs = [e for _, e in dashboard_exprs()]
    assert all("$queue" in e or "dead_letter" in e or "nbqueue_up" in e for e in exprs)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


@needs_prometheus
def test_promtool_checks_the_rules() -> None:
    res = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in res.stdout


def _get(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            return dict(_get(url))
        except urllib.error.HTTPError as exc:  # 400: a parse error, with its message
            return dict(json.loads(exc.read().decode()))

    def value(self, expr: str) -> float | None:
        r = self.query(expr)
        result = r.get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> dict[str, dict[str, Any]]:
        groups = _get(f"{self.base}/api/v1/rules")["data"]["groups"]
        return {rule["name"]: rule for g in groups for rule in g["rules"]}


@pytest.fixture
def prometheus(tmp_path: Path, conn: Connection, redis_url: str) -> Iterator[Prometheus]:
    """Prometheus (1 s scrapes and rule evaluations) scraping the ``nbqueue metrics``
    command on the test Redis, and an in-process exporter whose Redis is down."""
    port, exporter_port, prom_port = free_port(), free_port(), free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "nbqueue", "--url", redis_url, "metrics", "--port", str(port)],
        stdout=subprocess.DEVNULL, env=dict(os.environ))
    down = make_metrics_server(exporter_port, connection=f"redis://127.0.0.1:{free_port()}/0")
    threading.Thread(target=down.serve_forever, daemon=True).start()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "nbqueue", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
            {"job_name": "nbqueue_redis_down",
             "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}]}]}))
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        p = Prometheus(prom_port)

        def ready() -> bool:
            try:
                with urllib.request.urlopen(p.base + "/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                assert prom.poll() is None, prom.stderr.read() if prom.stderr else ""
                return False

        wait_for(ready, 60, "Prometheus ready")
        yield p
    finally:
        prom.terminate()
        exporter.terminate()
        down.shutdown()
        down.server_close()
        for proc in (prom, exporter):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if prom.stderr:
            prom.stderr.close()


def work(job: Any) -> Any:
    do = job.data["payload"]
    if do == "fail":
        raise ValueError("bad row")
    if do == "slow":
        time.sleep(0.2)
    return {"ok": do}


@needs_prometheus
def test_real_prometheus_runs_every_dashboard_and_alert_expression(
        prometheus: Prometheus, conn: Connection, r: redis.Redis) -> None:
    p = prometheus
    work_q = Queue("obs_work", connection=conn, default_job_options={
        "attempts": 2, "backoff": {"type": "fixed", "delay": 10}})
    idle_q = Queue("obs_idle", connection=conn)
    idle_q.add({"type": "t", "payload": "x"}, priority=2)
    old = idle_q.add({"type": "t", "payload": "x"}, priority=4)
    sec, _ = r.time()
    r.hset(f"nbq:{{obs_idle}}:job:{old.id}", "ts", (sec - 7200) * 1000)  # waiting 2 h
    work_q.add({"type": "t", "payload": "warm-up"})
    with Worker("obs_work", work, connection=conn, concurrency=3):
        # Prometheus has the queues before anything fails (the dead-letter delta needs it)
        wait_for(lambda: (p.value('count_over_time(nbqueue_queue_jobs{queue="obs_work",'
                                  'state="completed"}[1m])') or 0) >= 3
                 and (p.value('nbqueue_queue_jobs{queue="obs_work",state="completed"}')
                      or 0) >= 1, 60, "first scrapes")
        work_q.add_bulk([{"type": "t", "payload": kind} for kind in
                         ["ok"] * 6 + ["slow"] * 2 + ["fail"] * 3], priority=3)
        wait_for(lambda: r.zcard("nbq:{obs_work}:completed") == 9
                 and r.zcard("nbq:{obs_work}:failed") == 3, 60, "the jobs")
        wait_for(lambda: p.value('nbqueue_queue_jobs{queue="dead_letter",state="waiting"}')
                 == 3, 60, "Prometheus sees the dead letters")

        # every alert's expression returns data on this scenario (pending: `for` not over)
        def all_alerts_triggered() -> dict[str, dict[str, Any]] | None:
            alerts = p.alerts()
            done = all(a["health"] == "ok" and a["state"] in ("pending", "firing")
                       for a in alerts.values())
            return alerts if done and len(alerts) == len(rule_exprs()) else None

        try:
            alerts = wait_for(all_alerts_triggered, 90, "every alert pending or firing")
        except AssertionError:  # say which did not
            states = {n: (a["state"], a["health"], a.get("lastError"))
                      for n, a in p.alerts().items()}
            raise AssertionError(f"alerts not all triggered: {states}") from None
        no_workers = {a["labels"]["queue"] for a in alerts["NbqueueNoWorkers"]["alerts"]}
        assert no_workers == {"obs_idle"}  # obs_work has a worker; dead_letter is excluded
        oldest = {a["labels"]["queue"] for a in alerts["NbqueueOldestWaitingJob"]["alerts"]}
        assert oldest == {"obs_idle"}
        assert p.value('nbqueue_workers_online{queue="obs_work"}') == 1
        assert p.value('nbqueue_workers_online{queue="obs_idle"}') == 0

        def failing() -> list[tuple[str, str, Any]]:
            out = []
            for name, expr in rule_exprs():
                res = p.query(expr)
                if res.get("status") != "success" or not res["data"]["result"]:
                    out.append((name, expr, res))
            for title, expr in dashboard_exprs():
                res = p.query(grafana_to_promql(expr))
                if res.get("status") != "success" or not res["data"]["result"]:
                    out.append((title, expr, res))
            return out

        # a rate() needs two samples of a series: the error counters appear with the first
        # error, so give Prometheus a few more scrapes (a parse error never goes away)
        try:
            wait_for(lambda: not failing(), 60, "every expression to return data")
        except AssertionError:
            pass
        failures = failing()
        assert not failures, failures
        # the queue variable's values (Grafana's label_values(nbqueue_queue_jobs, queue))
        labels = _get(f"{p.base}/api/v1/label/queue/values?match[]=nbqueue_queue_jobs")
        assert {"obs_work", "obs_idle", "dead_letter"} <= set(labels["data"])
        # a few figures Prometheus read are exact
        assert p.value('nbqueue_jobs_finished_total{queue="obs_work",state="failed"}') == 3
        assert p.value('nbqueue_job_retries_total{queue="obs_work"}') == 3
        # error types and wait times ride with the worker's counters (flushed within ~1 s)
        wait_for(lambda: p.value('sum(opencell_tool_error_total{queue="obs_work"})') == 6
                 and p.value('nbqueue_job_wait_seconds_count{queue="obs_work"}') == 12,
                 30, "the worker's counters")  # 12 first attempts: 1 + 11
        assert p.value('nbqueue_queue_waiting_jobs{queue="obs_idle",priority="low"}') == 1
        assert (p.value('nbqueue_queue_oldest_waiting_seconds{queue="obs_idle"}') or 0) >= 7200
        assert p.value('nbqueue_up{job="nbqueue_redis_down"}') == 0
        # the KEDA ScaledObjects' queries (contrib/keda), on this scenario's idle queue:
        # its 2 waiting jobs and none active give the depth 2
        assert keda_queries()
        for name, query in keda_queries():
            assert 'queue="reports"' in query, (name, query)
            ours = query.replace('queue="reports"', 'queue="obs_idle"')
            assert p.value(ours) == 2, (name, ours, p.query(ours))


def test_a_broken_expression_is_caught(tmp_path: Path) -> None:
    """The reader of alerts.yml finds every rule (so a new rule cannot escape the test)."""
    names = [n for n, _ in rule_exprs()]
    assert names == ["NbqueueRedisDown", "NbqueueDeadLetterGrowing", "NbqueueNoWorkers",
                     "NbqueueOldestWaitingJob", "NbqueueHighErrorRatio"]
    assert all(e and "\n" not in e for _, e in rule_exprs())
