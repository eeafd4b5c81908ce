"""%%enqueue and %nbqueue, driven through a real (in-process) IPython shell."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.getipython import get_ipython
from IPython.testing.globalipapp import start_ipython

import nbqueue
from nbqueue import Job, JobFailedError


@pytest.fixture
def ip(r) -> Iterator[object]:
    """An IPython shell with the extension loaded, on a clean Redis, workers stopped after."""
    shell = get_ipython() or start_ipython()
    shell.run_line_magic("load_ext", "nbqueue")
    nbqueue.queue_manager.close()
    try:
        yield shell
    finally:
        nbqueue.queue_manager.close()


def test_load_ext_registers_magics(ip) -> None:
    magics = ip.magics_manager.magics
    assert "enqueue" in magics["cell"] and "nbqueue" in magics["line"]


def test_enqueue_help_is_complete(ip) -> None:
    doc = ip.magics_manager.magics["cell"]["enqueue"].__doc__
    for opt in ("--type", "--priority", "--delay", "--attempts", "--job-id", "--name",
                "--wait", "--timeout", "--run", "--out", "queue"):
        assert opt in doc, opt
    assert "%nbqueue status" in ip.magics_manager.magics["line"]["nbqueue"].__doc__


def test_enqueue_one_job_with_options_and_var_expansion(ip) -> None:
    ip.user_ns["prio"] = "high"
    ip.user_ns["n"] = 7
    ip.run_cell("%%enqueue mq --type send --priority {prio} --delay 5m --attempts 4 "
                "--job-id j-{n} --name handle\n{'to': 'a', 'n': n}")
    job = ip.user_ns["handle"]
    assert isinstance(job, Job) and job.id == "j-7"
    st = nbqueue.queue_manager.get_job_status("mq", "j-7")
    assert st.name == "send" and st.data == {"type": "send", "payload": {"to": "a", "n": 7}}
    assert st.priority == 2 and st.state == "delayed" and st.delay == 300_000
    assert st.opts["attempts"] == 4
    # re-running the cell with the same --job-id returns the same job
    ip.run_cell_magic("enqueue", "mq --type send --job-id j-7 --name again", "{'x': 1}")
    assert ip.user_ns["again"].id == "j-7"
    assert nbqueue.queue_manager.get_queue_metrics("mq").delayed == 1


def test_enqueue_bulk_and_full_data(ip) -> None:
    out = ip.run_cell_magic("enqueue", "bulkq --priority 3",
                            "[{'type': 'a', 'payload': i} for i in range(5)]")
    assert len(out) == 5 and "5 job(s) added" in out._repr_html_()
    assert nbqueue.queue_manager.get_queue_metrics("bulkq").waiting == 5
    job = ip.run_cell_magic("enqueue", "bulkq", "{'type': 'full', 'payload': {'k': 1}}")
    assert job.name == "full" and job.payload == {"k": 1}
    assert "<table" in job._repr_html_() and "waiting" in job._repr_html_()


@pytest.mark.parametrize("line, cell, match", [
    ("q --priority urgent", "{}", "priority"),
    ("q --delay soon", "{}", "delay"),
    ("q --attempts 0", "{}", "attempts"),
    ("q --bogus", "{}", "unrecognized"),
    ("", "{}", "queue"),
    ("q --out x", "{}", "--run"),
    ("q", "42", "dict"),
    ("q --job-id a1", "[{}, {}]", "bulk"),
    ("q", "   ", "empty"),
])
def test_enqueue_bad_usage_is_a_usage_error(ip, line: str, cell: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        ip.run_cell_magic("enqueue", line, cell)


def test_enqueue_wait_returns_the_result(ip) -> None:
    def proc(job):
        job.update_progress(50)
        if job.payload.get("fail"):
            raise nbqueue.UnrecoverableError("nope")
        return job.payload["x"] * 2

    nbqueue.queue_manager.get_queue("waitq")
    nbqueue.queue_manager.register_processor("waitq", proc)
    nbqueue.queue_manager.start_worker("waitq")
    assert ip.run_cell_magic("enqueue", "waitq --type d --wait --timeout 30s",
                             "{'x': 21}") == 42
    assert ip.run_cell_magic("enqueue", "waitq --type d --wait --timeout 30s",
                             "[{'x': 1}, {'x': 2}]") == [2, 4]
    with pytest.raises(JobFailedError, match="nope"):
        ip.run_cell_magic("enqueue", "waitq --type d --wait --timeout 30s", "{'fail': 1}")


def test_enqueue_wait_timeout(ip) -> None:
    nbqueue.queue_manager.get_queue("nobody")
    with pytest.raises(TimeoutError, match="not finished") as info:
        ip.run_cell_magic("enqueue", "nobody --type d --wait --timeout 300ms", "{}")
    assert "no live worker consumes queue 'nobody'" in str(info.value)  # issue 19 item 7


def test_enqueue_run_executes_cell_on_code_worker(ip) -> None:
    nbqueue.queue_manager.get_queue("cells")
    w = ip.run_line_magic("nbqueue", "worker start cells --allow-code")
    assert w.is_running
    ip.run_cell_magic("enqueue", "cells --run --out answer --timeout 30s",
                      "import math\nvalues = [math.factorial(i) for i in range(5)]\nsum(values)")
    assert ip.user_ns["answer"] == 34
    job = ip.run_cell_magic("enqueue", "cells --run --name h", "6 * 7")
    assert job.result(timeout=30) == 42 and ip.user_ns["h"] is job
    # a plain job on a code-only worker fails clearly
    plain = ip.run_cell_magic("enqueue", "cells --type x", "{}")
    with pytest.raises(JobFailedError, match="only runs code jobs"):
        plain.result(timeout=30)


def test_nbqueue_line_magic(ip) -> None:
    mgr = nbqueue.queue_manager
    ip.run_cell_magic("enqueue", "ctl --type t", "[{'i': i} for i in range(3)]")
    status = ip.run_line_magic("nbqueue", "status ctl")
    assert isinstance(status, pd.DataFrame) and status.loc["ctl", "waiting"] == 3
    jobs = ip.run_line_magic("nbqueue", "jobs ctl --state waiting --limit 2")
    assert len(jobs) == 2 and set(jobs["state"]) == {"waiting"}
    assert "data" not in jobs.columns
    everything = ip.run_line_magic("nbqueue", "jobs ctl --all")
    assert len(everything) == 3 and "data" in everything.columns
    ip.run_line_magic("nbqueue", "pause ctl")
    assert mgr.get_queue_metrics("ctl").paused
    ip.run_line_magic("nbqueue", "resume ctl")
    assert not mgr.get_queue_metrics("ctl").paused
    assert ip.run_line_magic("nbqueue", "drain ctl") == 3

    def boom(job):
        raise nbqueue.UnrecoverableError("x")

    ip.user_ns["boom"] = boom
    ip.run_cell_magic("enqueue", "ctl --type t", "{}")
    ip.run_line_magic("nbqueue", "worker start ctl --processor boom --concurrency 2")
    assert mgr.workers["ctl"].concurrency == 2
    deadline = time.monotonic() + 30
    while mgr.get_queue_metrics("ctl").failed < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "ctl" in ip.run_line_magic("nbqueue", "worker list")
    ip.run_line_magic("nbqueue", "worker stop ctl")
    assert "ctl" not in mgr.workers
    assert ip.run_line_magic("nbqueue", "retry ctl") == 1
    assert mgr.get_queue_metrics("ctl").waiting == 1
    panel = ip.run_line_magic("nbqueue", "dashboard ctl --refresh 0")
    try:
        assert "ctl" in panel.rows
    finally:
        panel.close()
    assert ip.run_line_magic("nbqueue", "clean ctl --state failed") == 0


@pytest.mark.parametrize("line, match", [
    ("", "command"),
    ("frobnicate", "invalid choice"),
    ("jobs", "queue"),
    ("jobs q --state nope", "unknown state"),
    ("worker start", "name the queue"),
    ("worker start q --processor missing", "no variable"),
    ("worker start q --mode fork", "invalid choice"),
    ("clean q --grace later", "grace"),
    ("pause 'unbalanced", "quotation"),
])
def test_nbqueue_bad_usage(ip, line: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        ip.run_line_magic("nbqueue", line)


def test_worker_stop_by_id_stops_a_worker_of_another_kernel(ip, capsys) -> None:
    """``%nbqueue worker stop ID`` (issue 19 item 5): any registered worker, through Redis
    (here one of another manager, as another kernel's would be)."""
    other = nbqueue.QueueManager(connection=nbqueue.connect())
    other.get_queue("elsewhere")
    w = nbqueue.Worker("elsewhere", lambda job: None, other.connection,
                       name="other-kernel-w1").start()
    try:
        assert [x.id for x in other.get_workers("elsewhere")] == ["other-kernel-w1"]
        ip.run_line_magic("nbqueue", "worker stop other-kernel-w1")
        assert "stopped worker other-kernel-w1 of 'elsewhere'" in capsys.readouterr().out
        assert other.get_workers("elsewhere") == []
        deadline = time.monotonic() + 30
        while w.is_running:
            assert time.monotonic() < deadline, "the worker did not stop"
            time.sleep(0.05)
        ip.run_line_magic("nbqueue", "worker stop no-such-worker")
        assert "no registered worker has that id" in capsys.readouterr().out
    finally:
        w.stop()
