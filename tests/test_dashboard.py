"""The dashboard panel without a frontend: build it, send it clicks, check Redis.

The browser checks (layout, clicks while a cell runs, screenshots) are in
``test_dashboard_browser.py``; the kernel-level click path in ``test_dashboard_kernel.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import nbqueue
from nbqueue import Worker
from nbqueue.notebook import dashboard as dashmod
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


def _panel_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nbqueue-dashboard" and t.is_alive()]


def test_rows_show_counts(mgr) -> None:
    q = mgr.get_queue("dash-a")
    mgr.get_queue("dash-b")
    q.add_bulk([{"type": "t", "payload": i} for i in range(3)])
    q.add({"type": "later", "payload": {}}, delay=60_000)
    panel = nbqueue.dashboard(manager=mgr, refresh=None)
    try:
        assert list(panel.rows) == ["dash-a", "dash-b"]
        row = panel.rows["dash-a"]
        assert row["counts"] == {"waiting": 3, "active": 0, "delayed": 1, "completed": 0,
                                 "failed": 0}
        assert row["paused"] is False and row["progress"] is None
        assert len(row["spark"]) == dashmod.SPARK_MINUTES
        assert not panel.is_refreshing
        assert panel.data["workers"] == []
        assert "dash-a: waiting 3, active 0, delayed 1" in panel.text()
        snap = panel.snapshot_html()
        assert "nbqueue-snapshot" in snap and "dash-a" in snap
        assert f"data-nbq-panel='{panel.panel_id}'" in snap
    finally:
        panel.close()


def test_display_adds_a_static_snapshot_kept_up_to_date(mgr, monkeypatch) -> None:
    """Displayed: the widget, then an HTML snapshot output (what a notebook reopened without
    its kernel shows); the snapshot follows the panel and ends with the stopped state."""
    import IPython.display

    shown: list[object] = []
    updates: list[str] = []

    class Handle:
        def update(self, obj: object) -> None:
            updates.append(obj.data)

    def fake_display(obj, raw=False, display_id=None, metadata=None):
        shown.append(obj)
        return Handle() if display_id else None

    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(dashmod, "SNAPSHOT_EVERY_S", 0.0)
    q = mgr.get_queue("dash-snap")
    panel = Dashboard(["dash-snap"], refresh=None, manager=mgr)
    try:
        panel._ipython_display_()
        assert len(shown) == 2
        assert "application/vnd.jupyter.widget-view+json" in shown[0]
        assert "dash-snap" in shown[0]["text/plain"]
        assert "nbqueue-snapshot" in shown[1].data
        q.add_bulk([{"type": "t", "payload": i} for i in range(7)])
        panel.refresh()
        assert updates and ">7</td>" in updates[-1]
        panel.stop()
        assert "stopped" in updates[-1]
    finally:
        panel.close()


def test_actions_act_on_redis_and_destructive_ones_need_confirmation(mgr) -> None:
    q = mgr.get_queue("dash-btn")
    q.add_bulk([{"type": "t", "payload": i} for i in range(4)])
    panel = Dashboard(["dash-btn"], refresh=None, manager=mgr)
    try:
        assert panel.act("pause", "dash-btn") == (True, "paused dash-btn")
        assert q.is_paused() and panel.rows["dash-btn"]["paused"]
        assert panel.data["message"] == "paused dash-btn"
        panel.act("resume", "dash-btn")
        assert not q.is_paused()
        ok, text = panel.act("drain", "dash-btn")  # not confirmed: refused, nothing deleted
        assert not ok and "confirmation" in text and q.get_metrics().waiting == 4
        ok, text = panel.act("drain", "dash-btn", confirmed=True)
        assert ok and "drained 4" in text and q.get_metrics().waiting == 0

        def fail(job):
            raise nbqueue.UnrecoverableError("bad")

        q.add_bulk([{"type": "t", "payload": i} for i in range(2)])
        with Worker("dash-btn", fail, mgr.connection, dead_letter=False):
            _wait(lambda: q.get_metrics().failed == 2)
        ok, text = panel.act("retry", "dash-btn")
        assert ok and "2 failed job(s)" in text
        m = q.get_metrics()
        assert m.failed == 0 and m.waiting == 2
        with Worker("dash-btn", lambda job: "ok", mgr.connection):
            _wait(lambda: q.get_metrics().completed == 2)
        assert not panel.act("clean", "dash-btn")[0] and q.get_metrics().completed == 2
        ok, text = panel.act("clean", "dash-btn", confirmed=True)
        assert ok and "cleaned 2" in text and q.get_metrics().completed == 0
        assert not panel.act("obliterate", "dash-btn")[0]
        assert panel.act("pause", "not-shown")[0] is False
    finally:
        panel.close()


def test_errors_are_shown_not_raised(mgr) -> None:
    panel = Dashboard(["dash-err"], refresh=None, manager=mgr)
    try:
        st = panel._queues["dash-err"]
        st.queue = type("Broken", (), {"name": "dash-err", "pause": lambda self: 1 / 0})()
        ok, text = panel.act("pause", "dash-err")  # must not raise
        assert not ok and "pause failed" in text and panel.data["message_ok"] is False
    finally:
        panel.close()


def test_drill_down_lists_jobs_and_shows_a_failed_job(mgr) -> None:
    q = mgr.get_queue("dash-drill")

    def proc(job):
        if job.payload == "bad":
            raise ValueError("broken input")
        return {"ok": job.payload}

    q.add({"type": "t", "payload": "good"}, job_id="g1")
    q.add({"type": "t", "payload": "bad"}, job_id="b1", attempts=1)
    q.add({"type": "t", "payload": "later"}, job_id="d1", delay=600_000)
    with Worker("dash-drill", proc, mgr.connection):
        _wait(lambda: q.get_metrics().failed == 1 and q.get_metrics().completed == 1)
    panel = Dashboard(["dash-drill"], refresh=None, manager=mgr)
    try:
        panel.act("list", "dash-drill", state="failed")
        d = panel.detail
        assert d["queue"] == "dash-drill" and d["state"] == "failed"
        assert [j["id"] for j in d["jobs"]] == ["b1"] and "broken input" in d["jobs"][0]["summary"]
        panel.act("job", "dash-drill", job_id="b1")
        job = panel.detail["job"]
        assert job["state"] == "failed" and "broken input" in job["error"]
        assert job["can"]["retry"] and job["can"]["remove"] and not job["can"]["promote"]
        assert '"payload": "bad"' in job["data"]
        panel.act("job", "dash-drill", job_id="g1")
        assert panel.detail["job"]["result"] is not None and '"ok": "good"' in \
            panel.detail["job"]["result"]
        panel.act("list", "dash-drill", state="delayed")
        assert [j["id"] for j in panel.detail["jobs"]] == ["d1"]
        assert not panel.act("job_remove", "dash-drill", job_id="d1")[0]  # asks first
        assert panel.act("job_remove", "dash-drill", job_id="d1", confirmed=True)[0]
        assert q.get_job("d1") is None
        assert panel.act("job_retry", "dash-drill", job_id="b1")[0]
        assert q.get_job("b1").get_state() == "waiting"
        panel.act("list", "dash-drill", state="dead_letter")  # no dead letters: empty list
        assert panel.detail["state"] == "dead_letter"
    finally:
        panel.close()


def test_dead_letter_tab_lists_the_queues_dead_jobs(mgr) -> None:
    q = mgr.get_queue("dash-dl")
    q.add({"type": "t", "payload": {}}, job_id="x1", attempts=1)
    with Worker("dash-dl", lambda job: 1 / 0, mgr.connection):
        _wait(lambda: mgr.get_queue("dead_letter").get_metrics().waiting >= 1)
    panel = Dashboard(["dash-dl"], refresh=None, manager=mgr)
    try:
        panel.act("list", "dash-dl", state="dead_letter")
        rows = panel.detail["jobs"]
        assert [r["id"] for r in rows] == ["x1"] and "division" in rows[0]["summary"]
    finally:
        panel.close()


def test_refresh_is_one_round_trip_for_all_queues(mgr) -> None:
    names = [f"dash-many-{i}" for i in range(50)]
    for n in names:
        mgr.get_queue(n).add({"type": "t", "payload": {}})
    panel = Dashboard(names, refresh=None, manager=mgr)
    try:
        before = panel.round_trips
        panel.refresh()
        panel.refresh()
        assert panel.round_trips - before == 2
        assert all(r["counts"]["waiting"] == 1 for r in panel.rows.values())
        assert len(panel.rows) == 50
    finally:
        panel.close()


def test_smoothed_rate_and_stopped_workers(mgr) -> None:
    q = mgr.get_queue("dash-rate")
    panel = Dashboard(["dash-rate"], refresh=None, manager=mgr)
    try:
        st = panel._queues["dash-rate"]
        # A steady 0.5 jobs/s seen by 1 s refreshes: the window smooths it (no 0.0/2.0 flips).
        for i in range(12):
            rate = st.rate(100.0 + i, i / 2)
        assert rate == pytest.approx(0.5)
        mgr.register_processor("dash-rate", lambda job: 1)
        mgr.start_worker("dash-rate")
        q.add({"type": "t", "payload": 0}).result(timeout=20)  # the worker is up
        panel.refresh()
        assert panel.data["workers"][0]["state"] == "running"
        mgr.workers["dash-rate"].stop()
        panel.refresh()
        assert panel.data["workers"][0]["state"] == "stopped"
        mgr.stop_worker("dash-rate")  # the manager forgets it; the panel shows it stopped
        panel.refresh()
        assert [w["state"] for w in panel.data["workers"]] == ["stopped"]
        with Worker("dash-rate", lambda job: 1, mgr.connection):
            for j in q.add_bulk([{"type": "t", "payload": i} for i in range(5)]):
                j.result(timeout=20)
        panel.refresh()
        assert sum(c for c, _ in panel.rows["dash-rate"]["spark"]) == 6
    finally:
        panel.close()


def test_background_refresh_stops_on_close_stop_and_manager_close(mgr) -> None:
    q = mgr.get_queue("dash-live")
    started, release = threading.Event(), threading.Event()

    def slow(job):
        job.update_progress(40)
        started.set()
        release.wait(20)
        return 1

    mgr.register_processor("dash-live", slow)
    panel = nbqueue.dashboard(["dash-live"], refresh=0.05, manager=mgr)
    try:
        assert panel.is_refreshing
        mgr.start_worker("dash-live")
        q.add({"type": "t", "payload": {}})
        assert started.wait(20)
        _wait(lambda: panel.rows["dash-live"]["counts"]["active"] == 1
              and panel.rows["dash-live"]["progress"] == 40)
        release.set()
        _wait(lambda: panel.rows["dash-live"]["counts"]["completed"] == 1)
        thread = panel._thread
        panel.stop()
        assert not panel.live and thread is not None and not thread.is_alive()
        trips = panel.round_trips
        time.sleep(0.3)
        assert panel.round_trips == trips  # nothing polls after stop()
    finally:
        release.set()
        panel.close()
    other = nbqueue.dashboard(["dash-live"], refresh=0.05, manager=mgr)
    assert other.is_refreshing
    mgr.close()  # closes the manager's panels too
    _wait(lambda: not other.is_refreshing)


def test_widget_close_all_stops_polling(mgr) -> None:
    """ipywidgets' Widget.close_all() (and any close) ends the refresher."""
    import ipywidgets

    panel = nbqueue.dashboard(["dash-gc"], refresh=0.05, manager=mgr)
    thread = panel._thread
    assert thread is not None and thread.is_alive()
    ipywidgets.Widget.close_all()
    thread.join(5)
    assert not thread.is_alive() and panel.comm is None


def test_rerunning_a_cell_closes_its_previous_panel(mgr, monkeypatch) -> None:
    monkeypatch.setattr(dashmod, "_current_cell_id", lambda: "cell-1")
    first = nbqueue.dashboard(["dash-cell"], refresh=0.05, manager=mgr)
    second = nbqueue.dashboard(["dash-cell"], refresh=0.05, manager=mgr)
    try:
        assert first._closed and not first.is_refreshing and second.is_refreshing
        monkeypatch.setattr(dashmod, "_current_cell_id", lambda: "cell-2")
        third = nbqueue.dashboard(["dash-cell"], refresh=0.05, manager=mgr)
        assert second.is_refreshing and third.is_refreshing  # another cell: both live
        third.close()
    finally:
        second.close()


def test_default_queues_include_dead_letter_once_it_has_jobs(mgr) -> None:
    q = mgr.get_queue("dash-default")
    q.add({"type": "t", "payload": {}}, job_id="dd1", attempts=1)
    with Worker("dash-default", lambda job: 1 / 0, mgr.connection):
        _wait(lambda: mgr.get_queue("dead_letter").get_metrics().waiting >= 1)
    panel = Dashboard(refresh=None, manager=mgr)
    try:
        assert panel.queue_names[-1] == "dead_letter"
    finally:
        panel.close()


def test_no_queues_message(mgr) -> None:
    panel = Dashboard(refresh=None, manager=mgr)
    try:
        assert panel.rows == {} and panel.data["queues"] == []
    finally:
        panel.close()


def test_workers_of_every_host_from_the_registry(mgr) -> None:
    """A worker registered from another host shows with its host, pid and active jobs."""
    q = mgr.get_queue("dash-reg")
    q._run(q._ops.heartbeat("w-remote", 60_000, {"host": "gpu-box-7", "pid": 4242,
                                                 "mode": "process", "concurrency": 8}, 3))
    panel = Dashboard(["dash-reg"], refresh=None, manager=mgr)
    try:
        panel.refresh()  # the registry hashes are read for the ids the first refresh saw
        (w,) = panel.data["workers"]
        assert w["host"] == "gpu-box-7 pid 4242" and w["mode"] == "process"
        assert w["concurrency"] == 8 and w["active"] == 3 and w["state"] == "running"
        q._run(q._ops.deregister("w-remote"))
        panel.refresh()
        assert panel.data["workers"] == []
    finally:
        panel.close()


def test_rich_reprs_of_job_queue_and_batch(mgr) -> None:
    q = mgr.get_queue("dash-repr")
    html = q._repr_html_()
    assert "dash-repr" in html and "waiting" in html and "workers" in html
    job = q.add({"type": "t", "payload": {"n": 5}})
    assert "waiting" in job._repr_html_() and "0%" in job._repr_html_()
    batch = q.add_bulk([{"type": "t", "payload": {"n": i}} for i in range(3)])

    def proc(job):
        job.update_progress(50)
        if job.payload["n"] == 2:
            raise ValueError("two is bad")
        return {"double": job.payload["n"] * 2}

    with Worker("dash-repr", proc, mgr.connection):
        assert job.result(timeout=20) == {"double": 10}
        batch.wait(timeout=30, progress=False)
    out = batch._repr_html_()
    assert "3 job(s) added" in out and "3/3 done, 1 failed" in out
    ok = batch[1]
    card = ok._repr_html_()  # refreshed for display: completed, 100%, result, times
    assert "completed" in card and "100%" in card and "&quot;double&quot;: 2" in card
    assert "ran " in card and "waited " in card
    bad = batch[2]
    card = bad._repr_html_()
    assert "failed" in card and "two is bad" in card and "ValueError" in card
    # The stored traceback of the last failed attempt is shown under the error.
    bad._record.stacktrace = ['Traceback (most recent call last):\n  File "nb", line 4, in '
                              'proc\nValueError: two is bad']
    card = super(type(bad), bad)._repr_html_()  # the record as it is, no refresh
    assert "<summary>traceback</summary>" in card and "line 4, in proc" in card

    class P:
        def __init__(self) -> None:
            self.out = ""

        def text(self, t: str) -> None:
            self.out += t

    p = P()
    bad._repr_pretty_(p, False)
    assert "failed" in p.out and "two is bad" in p.out
    p = P()
    q._repr_pretty_(p, False)
    assert "Queue 'dash-repr'" in p.out and "completed" in p.out


def test_job_actions_promote_and_cancel(mgr) -> None:
    q = mgr.get_queue("dash-jobact")
    q.add({"type": "t", "payload": {}}, job_id="later", delay=600_000)
    q.add({"type": "t", "payload": {}}, job_id="queued")
    panel = Dashboard(["dash-jobact"], refresh=None, manager=mgr)
    try:
        panel.act("job", "dash-jobact", job_id="later")
        can = panel.detail["job"]["can"]
        assert can["promote"] and can["cancel"] and not can["retry"]
        ok, text = panel.act("job_promote", "dash-jobact", job_id="later")
        assert ok and "promoted" in text and q.get_job("later").get_state() == "waiting"
        assert panel.detail["job"]["state"] == "waiting"  # the detail shows it at once
        ok, text = panel.act("job_cancel", "dash-jobact", job_id="queued")
        assert ok and "cancelled" in text
        job = q.get_job("queued")
        assert job is None or job.get_state() == "failed"
        ok, text = panel.act("job_retry", "dash-jobact", job_id="nope")
        assert not ok and "no longer exists" in text
    finally:
        panel.close()


def test_jobs_held_by_dependencies_are_shown(mgr) -> None:
    q = mgr.get_queue("dash-held")
    parent = q.add({"type": "t", "payload": {}}, job_id="parent")
    q.add({"type": "t", "payload": {}}, job_id="child", depends_on=[parent])
    panel = Dashboard(["dash-held"], refresh=None, manager=mgr)
    try:
        assert panel.rows["dash-held"]["held"] == 1
        assert panel.rows["dash-held"]["counts"]["waiting"] == 1
        panel.act("list", "dash-held", state="waiting-children")
        assert [j["id"] for j in panel.detail["jobs"]] == ["child"]
    finally:
        panel.close()
