"""The ``nbqueue`` command, run as a user would (subprocesses)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

from nbqueue import Queue


def run_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "nbqueue", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or os.environ.copy())


def test_demo_on_embedded_default(tmp_path):
    env = os.environ.copy()
    env.pop("NBQUEUE_REDIS_URL", None)
    env.pop("REDIS_URL", None)
    env["NBQUEUE_HOME"] = str(tmp_path / "home")
    try:
        res = run_cli("demo", env=env)
        assert res.returncode == 0, res.stderr
        out = res.stdout
        assert "unix://" in out and "dead-letter record: demo_data_processing_" in out
        assert "failed after 3 attempts" in out
        assert "%" in out  # progress was shown
    finally:
        run_cli("server", "stop", env=env)


def test_demo_output_reads_well_and_touches_only_its_own_data(conn, r, redis_url):
    """A user's dead-letter records, and a queue of theirs named like the old demo queue,
    survive ``nbqueue demo``; the demo removes what it made; its output explains itself."""
    user_dlq = Queue("dead_letter", conn)
    record = user_dlq.add({"type": "dead_letter", "payload": {
        "queue": "billing", "job_id": "7", "reason": "card declined", "attempts_made": 5}})
    mine = Queue("demo_data_processing", conn).add({"type": "mine", "payload": 1})
    before = set(r.keys("*"))
    res = run_cli("--url", redis_url, "demo")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert user_dlq.get_job(record.id) is not None  # the user's record survived
    assert Queue("demo_data_processing", conn).get_job(mine.id) is not None
    assert set(r.keys("*")) >= before
    # nothing of the demo is left: its queue, its dead-letter record, its registry entry
    # all gone but the adds' idempotency tokens, which expire by themselves within minutes
    assert not [k for k in r.keys("*") if "demo_data_processing_" in k
                and not (":add:" in k and 0 < r.pttl(k) <= 180_000)]
    assert not [n for n in r.smembers("nbq:queues") if n.startswith("demo_data_processing_")]
    assert [j.id for j in user_dlq.get_jobs("waiting", 0, 0)] == [record.id]
    # the newcomer's questions, answered in the output
    assert "delayed = the failing job waiting out its retry backoff" in out
    assert "retried after 100 ms then 200 ms" in out
    order = out.split("start order (strict priority, FIFO within a level; 4 at a time): ")[1]
    levels = [w.split("(")[1].rstrip(")") for w in order.splitlines()[0].split()]
    ranks = ["CRITICAL", "HIGH", "NORMAL", "LOW", "BACKGROUND"]
    assert [ranks.index(x) for x in levels] == sorted(ranks.index(x) for x in levels)
    assert len(levels) == 12
    assert re.search(r"returned sum=45 \(took \d+ ms\)", out)
    assert re.search(r"all 13 jobs ended in \d+\.\d s", out)
    header = [line for line in out.splitlines() if line.startswith("queue  ")]
    assert header and "completed" in header[0] and "total" not in out
    assert "removed queue 'demo_data_processing_" in out and "1 dead-letter record" in out


def test_demo_keep_keeps_its_queue(conn, r, redis_url):
    res = run_cli("--url", redis_url, "demo", "--jobs", "2", "--keep")
    assert res.returncode == 0, res.stderr
    kept = [n for n in r.smembers("nbq:queues") if n.startswith("demo_data_processing_")]
    assert len(kept) == 1
    assert Queue(kept[0], conn).get_metrics().completed == 2
    dead = Queue("dead_letter", conn).get_jobs("waiting", 0, 0)
    assert [d.data["payload"]["queue"] for d in dead] == kept


def test_worker_and_stats_commands(conn, tmp_path, redis_url):
    (tmp_path / "procs.py").write_text(textwrap.dedent("""
        def double(job):
            return job.data["payload"] * 2
    """))
    q = Queue("cliq", conn)
    jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(5)])
    proc = subprocess.Popen([sys.executable, "-m", "nbqueue", "--url", redis_url, "worker",
                             "cliq", "--processor", f"{tmp_path}/procs.py:double",
                             "--concurrency", "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert [j.result(timeout=30) for j in jobs] == [0, 2, 4, 6, 8]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    res = run_cli("--url", redis_url, "stats", "cliq")
    assert res.returncode == 0
    assert "cliq" in res.stdout and "completed" in res.stdout
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("cliq"))
    assert line.split()[4] == "5"


def test_cli_reports_unreachable_redis():
    t0 = time.monotonic()
    res = run_cli("--url", "redis://:pw@127.0.0.1:1/0", "stats")
    assert res.returncode == 1
    assert "127.0.0.1:1" in res.stderr and "pw@" not in res.stderr
    assert time.monotonic() - t0 < 60


def test_workers_stop_id_stops_a_terminal_worker_and_names_an_unknown_id(conn, tmp_path,
                                                                          redis_url):
    """``nbqueue workers stop ID`` (issue 19 item 5): any registered worker, through Redis;
    it stops gracefully and its process exits 0. An unknown id: exit 1, nothing sent."""
    (tmp_path / "procs.py").write_text("def noop(job):\n    return None\n")
    q = Queue("cli_stop", conn)
    proc = subprocess.Popen([sys.executable, "-m", "nbqueue", "--url", redis_url, "worker",
                             "cli_stop", "--processor", f"{tmp_path}/procs.py:noop"],
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not q.get_workers():
            assert time.monotonic() < deadline, "the worker never registered"
            time.sleep(0.05)
        wid = q.get_workers()[0].id
        res = run_cli("--url", redis_url, "workers", "stop", wid)
        assert res.returncode == 0, res.stderr
        assert f"worker {wid} of 'cli_stop' stopped" in res.stdout
        assert proc.wait(timeout=30) == 0
        assert q.get_workers() == []
    finally:
        if proc.poll() is None:
            proc.kill()
    res = run_cli("--url", redis_url, "workers", "stop", "no-such-worker")
    assert res.returncode == 1 and "no registered worker 'no-such-worker'" in res.stderr
