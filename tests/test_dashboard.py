"""The ipywidgets dashboard, without a frontend: build it, click its buttons, check Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import nbqueue
from nbqueue import Worker
from nbqueue.notebook.dashboard import Dashboard


@pytest.fixture
def mgr(conn) -> Iterator[nbqueue.QueueManager]:
    m = nbqueue.QueueManager(conn)
    try:
        yield m
    finally:
        m.close()


def _wait(cond, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_rows_show_counts(mgr) -> None:
    q = mgr.get_queue("dash-a")
    mgr.get_queue("dash-b")
    q.add_bulk([{"type": "t", "payload": i} for i in range(3)])
    q.add({"type": "later", "payload": {}}, delay=60_000)
    panel = nbqueue.dashboard(manager=mgr, refresh=None)
    try:
        assert list(panel.rows) == ["dash-a", "dash-b"]
        row = panel.rows["dash-a"]
        assert row.metrics.waiting == 3 and row.metrics.delayed == 1
        assert "waiting&nbsp;<b>3</b>" in row.counts.value
        assert "delayed&nbsp;<b>1</b>" in row.counts.value
        assert row.progress.description == "0 active"
        assert row.resume_button.disabled and not row.pause_button.disabled
        assert not panel.is_refreshing
        assert "none started here" in panel.workers.value
    finally:
        panel.close()


def test_buttons_act_on_redis(mgr, r) -> None:
    q = mgr.get_queue("dash-btn")
    q.add_bulk([{"type": "t", "payload": i} for i in range(4)])
    panel = Dashboard(["dash-btn"], refresh=None, manager=mgr)
    row = panel.rows["dash-btn"]
    try:
        row.pause_button.click()
        assert q.is_paused() and "PAUSED" in row.counts.value
        assert row.pause_button.disabled and not row.resume_button.disabled
        assert "paused dash-btn" in panel.status.value
        row.resume_button.click()
        assert not q.is_paused()
        row.drain_button.click()
        assert q.get_metrics().waiting == 0 and "drained 4" in panel.status.value

        def fail(job):
            raise nbqueue.UnrecoverableError("bad")

        q.add_bulk([{"type": "t", "payload": i} for i in range(2)])
        with Worker("dash-btn", fail, mgr.connection, dead_letter=False):
            _wait(lambda: q.get_metrics().failed == 2)
        panel.refresh()
        assert not row.retry_button.disabled
        row.retry_button.click()
        m = q.get_metrics()
        assert m.failed == 0 and m.waiting == 2 and "2 failed job(s)" in panel.status.value
        with Worker("dash-btn", lambda job: "ok", mgr.connection):
            _wait(lambda: q.get_metrics().completed == 2)
        row.clean_button.click()
        assert q.get_metrics().completed == 0 and "cleaned 2" in panel.status.value
    finally:
        panel.close()


def test_button_errors_are_shown_not_raised(mgr, redis_server) -> None:
    q = mgr.get_queue("dash-err")
    panel = Dashboard([q], refresh=None, manager=mgr)
    try:
        row = panel.rows["dash-err"]
        row.queue = type("Broken", (), {"name": "dash-err",
                                        "pause": lambda self: 1 / 0})()
        row.pause_button.click()  # must not raise
        assert "pause failed" in panel.status.value
    finally:
        panel.close()


def test_background_refresh_sets_values_and_stops_on_close(mgr) -> None:
    q = mgr.get_queue("dash-live")
    started, release = threading.Event(), threading.Event()

    def slow(job):
        job.update_progress(40)
        started.set()
        release.wait(20)
        return 1

    mgr.register_processor("dash-live", slow)
    panel = nbqueue.dashboard(["dash-live"], refresh=0.05, manager=mgr)
    row = panel.rows["dash-live"]
    try:
        assert panel.is_refreshing
        mgr.start_worker("dash-live")
        q.add({"type": "t", "payload": {}})
        assert started.wait(20)
        _wait(lambda: row.progress.description == "1 active" and row.progress.value == 40)
        assert "dash-live (thread x1, running)" in panel.workers.value
        release.set()
        _wait(lambda: row.metrics.completed == 1)
        _wait(lambda: row.progress.description == "0 active")
        thread = panel._thread
    finally:
        release.set()
        panel.close()
    assert thread is not None and not thread.is_alive()
    assert not panel.is_refreshing


def test_throughput_is_computed_between_refreshes(mgr) -> None:
    q = mgr.get_queue("dash-rate")
    panel = Dashboard(["dash-rate"], refresh=None, manager=mgr)
    try:
        row = panel.rows["dash-rate"]
        with Worker("dash-rate", lambda job: 1, mgr.connection):
            jobs = q.add_bulk([{"type": "t", "payload": i} for i in range(20)])
            for j in jobs:
                j.result(timeout=20)
        panel.refresh()
        assert row.throughput > 0 and row.rate.value.endswith("jobs/s")
    finally:
        panel.close()


def test_no_queues_message(mgr) -> None:
    panel = Dashboard(refresh=None, manager=mgr)
    try:
        assert panel.rows == {} and "no queues yet" in panel.children[0].value
    finally:
        panel.close()
