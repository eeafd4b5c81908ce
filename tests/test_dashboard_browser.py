"""The dashboard in a real browser: JupyterLab + Debian's chromium, driven by selenium.

Checks what issue 14 asks of the panel, as a user sees it at 1366x768 with the file browser
open: it renders; counts move; no text is cut; a Pause clicked while a cell waits in
``job.result()`` (and while a cell sleeps) takes effect within seconds; Drain asks first;
re-running the cell leaves one refresher; a failed job's traceback is reachable; a saved
notebook reopened without its kernel shows the last state. Screenshots are written to
``$NBQUEUE_SCREENSHOTS`` (default ``tests/screenshots/``); the test prints the folder.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import redis
from browser import Lab, find_browser, lab, notebook, wait

pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("NBQUEUE_SCREENSHOTS",
                            Path(__file__).resolve().parent / "screenshots"))

SETUP = '''\
import threading, time
import nbqueue
from nbqueue import queue_manager as qm

def work(job):
    time.sleep(job.payload.get("secs", 0.2))
    if job.payload.get("fail"):
        raise ValueError(f"bad input {job.payload['fail']!r}")
    return {"ok": job.payload.get("i")}

for name in ("emails", "reports", "thumbnails", "payments-eu-west-1"):
    qm.register_processor(name, work)
    qm.get_queue(name)
qm.get_queue("dead_letter")
for name in ("emails", "reports", "thumbnails"):
    qm.start_worker(name, worker_concurrency=2)
bad = qm.add_job("reports", {"type": "broken", "payload": {"fail": 7}}, attempts=1)
qm.add_jobs("payments-eu-west-1", [{"type": "charge", "payload": {"i": i}} for i in range(120)])
qm.add_jobs("thumbnails", [{"type": "resize", "payload": {"i": i, "secs": 0.05}}
                           for i in range(300)])
stop_feed = threading.Event()

def feed():
    i = 0
    while not stop_feed.is_set():
        qm.add_job("emails", {"type": "send", "payload": {"i": i, "secs": 0.3}})
        i += 1
        stop_feed.wait(0.4)

threading.Thread(target=feed, daemon=True).start()
try:
    bad.result(timeout=30)
except nbqueue.JobFailedError:
    pass
print("ready")
'''
PANEL = "panel = nbqueue.dashboard(refresh=0.5)\npanel"
WAIT_RESULT = ('job = qm.add_job("reports", {"type": "slow", "payload": {"secs": 15}})\n'
               'print("result:", job.result(timeout=120))')
SLEEP = "time.sleep(12)\nprint('slept')"
COUNT = ('print("refreshers:", sum(t.name == "nbqueue-dashboard" and t.is_alive()\n'
         '                          for t in threading.enumerate()))')
CLEANUP = "stop_feed.set()\nqm.close()\nprint('closed')"


@pytest.fixture(scope="module")
def browser_paths() -> tuple[str, str]:
    found = find_browser()
    if found is None:
        pytest.skip("chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    pytest.importorskip("jupyterlab")
    return found


def _paused(r: redis.Redis, queue: str) -> bool:
    return r.hget(f"nbq:{{{queue}}}:meta", "paused") == "1"


def _row_button(session: Lab, queue: str, action: str) -> None:
    session.js(
        "const b = document.querySelector(`tr[data-queue='${arguments[0]}'] "
        "button[data-action='${arguments[1]}']`); if (!b) throw new Error('no button'); "
        "b.click();", queue, action)


def _count(session: Lab, queue: str, state: str) -> int:
    return int(session.js(
        "const td = document.querySelector(`tr[data-queue='${arguments[0]}'] "
        "td.nbq-${arguments[1]}`); return td ? td.title.split(' ')[0] : -1;", queue, state))


def _cut_text(session: Lab) -> list[str]:
    """Elements of the panel whose text is cut (scrollWidth > clientWidth), and the panel
    itself if it is wider than its output area."""
    return list(session.js("""
        const out = [];
        const roots = document.querySelectorAll('.nbq-root');
        for (const root of roots) {
          const area = root.closest('.jp-OutputArea-output') || root.parentElement;
          if (root.scrollWidth > root.clientWidth + 1 || area.scrollWidth > area.clientWidth + 1)
            out.push(`panel ${root.scrollWidth}>${root.clientWidth} / `
                     + `${area.scrollWidth}>${area.clientWidth}`);
          for (const el of root.querySelectorAll('*')) {
            if (!el.childNodes.length || el.closest('svg')) continue;
            const hasText = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
            if (!hasText) continue;
            const st = getComputedStyle(el);
            if (st.display === 'inline' || el.clientWidth === 0) continue;
            if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 2
                && st.overflowY !== 'visible' && st.overflowY !== 'auto')
              out.push(`${el.tagName}.${el.className}: '${el.textContent.slice(0, 40)}' `
                       + `${el.scrollWidth}>${el.clientWidth}`);
          }
        }
        return out;"""))


def test_dashboard_in_jupyterlab(browser_paths, redis_server, tmp_path: Path) -> None:
    print(f"\nscreenshots: {SHOTS}")
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    for key in r.scan_iter("nbq:*"):
        r.delete(key)
    cells = [SETUP, PANEL, WAIT_RESULT, SLEEP, COUNT, CLEANUP]
    (tmp_path / "panel.ipynb").write_text(json.dumps(notebook(cells)))
    env = {"NBQUEUE_REDIS_URL": redis_server.url, "NBQUEUE_HOME": str(tmp_path / "home")}
    with lab(tmp_path, env, SHOTS) as session:
        session.open_notebook("panel.ipynb")
        session.show_file_browser()
        session.run_cell(0)
        session.wait_cell_done(0, 120)
        assert "ready" in session.cell_text(0)
        session.run_cell(1)
        # It renders: one row per queue.
        wait(lambda: session.js("return document.querySelectorAll('.nbq-row').length") == 5,
             60, "the panel's rows")
        session.js("document.querySelector('.nbq-root').scrollIntoView()")
        # Counts move (the feeder adds emails, workers finish them).
        done0 = wait(lambda: _count(session, "emails", "completed") >= 0, 30, "a count")
        wait(lambda: _count(session, "emails", "completed") > done0 + 2, 60,
             "the completed count of emails to move")
        wait(lambda: session.js("return [...document.querySelectorAll('.nbq-rate')]"
                                ".some(td => td.textContent !== '-')"), 30, "a rate")
        session.screenshot("01-panel-1366x768")
        # Fits 1366x768 with the file browser open: no text cut anywhere in the panel.
        assert session.js("return window.innerWidth") == 1366
        assert not session.js("return window.jupyterapp.shell.leftCollapsed")
        assert _cut_text(session) == []
        assert session.js("return [...document.querySelectorAll('.nbq-btn')]"
                          ".every(b => b.title && b.getAttribute('aria-label'))")

        # A Pause clicked while a cell waits in job.result() takes effect within seconds.
        session.run_cell(2)
        wait(lambda: session.cell_running(2), 30, "cell 2 to run")
        wait(lambda: int(r.zcard("nbq:{reports}:active")) >= 1, 30, "the slow job to start")
        _row_button(session, "reports", "pause")
        t0 = time.monotonic()
        wait(lambda: _paused(r, "reports"), 10, "reports to be paused")
        assert time.monotonic() - t0 < 10
        assert session.cell_running(2), "the pause should land while the cell still waits"
        wait(lambda: session.js("return !!document.querySelector("
                                "\"tr[data-queue='reports'] .nbq-badge\")"), 10,
             "the paused badge")
        session.screenshot("02-paused-while-cell-waits")
        _row_button(session, "reports", "resume")
        wait(lambda: not _paused(r, "reports"), 10, "reports to resume")
        session.wait_cell_done(2, 120)
        assert "result:" in session.cell_text(2)

        # Any other busy cell: the click is handled at once, or shown as pending.
        session.run_cell(3)
        wait(lambda: session.cell_running(3), 30, "cell 3 to run")
        time.sleep(1)
        _row_button(session, "emails", "pause")
        state = session.js("return document.querySelector('.nbq-kernel') ?"
                           " document.querySelector('.nbq-kernel').className : ''")
        if "concurrent" in state or not state:
            wait(lambda: _paused(r, "emails"), 10, "emails paused during time.sleep")
            assert session.cell_running(3)
        else:  # a kernel without subshell routing: the click waits, visibly
            assert session.js("return !!document.querySelector('.nbq-pending')")
        session.screenshot("03-click-during-busy-cell")
        session.wait_cell_done(3, 60)
        wait(lambda: _paused(r, "emails"), 20, "emails paused")
        _row_button(session, "emails", "resume")
        wait(lambda: not _paused(r, "emails"), 10, "emails resumed")

        # Drain asks first; Cancel keeps the jobs; confirming drains.
        waiting = int(r.zcard("nbq:{payments-eu-west-1}:wait"))
        assert waiting == 120
        _row_button(session, "payments-eu-west-1", "drain")
        wait(lambda: session.js("return !!document.querySelector('.nbq-confirm')"), 10,
             "the drain confirmation")
        assert "120 waiting" in session.js(
            "return document.querySelector('.nbq-confirm').innerText")
        session.screenshot("04-drain-asks-first")
        time.sleep(1)
        assert int(r.zcard("nbq:{payments-eu-west-1}:wait")) == 120
        session.js("document.querySelector(\".nbq-confirm button[data-action='cancel-confirm']\")"
                   ".click()")
        assert not session.js("return !!document.querySelector('.nbq-confirm')")
        assert int(r.zcard("nbq:{payments-eu-west-1}:wait")) == 120
        _row_button(session, "payments-eu-west-1", "drain")
        wait(lambda: session.js("return !!document.querySelector('.nbq-confirm')"), 10,
             "the drain confirmation")
        session.js("document.querySelector(\".nbq-confirm button[data-action='confirm']\")"
                   ".click()")
        wait(lambda: int(r.zcard("nbq:{payments-eu-west-1}:wait")) == 0, 10, "the drain")

        # A failed job's traceback is reachable: details -> failed -> the job.
        _row_button(session, "reports", "details")
        wait(lambda: session.js("return document.querySelectorAll('.nbq-jobrow').length") >= 1,
             20, "the failed jobs list")
        session.js("document.querySelector('.nbq-jobrow').click()")
        wait(lambda: session.js("return !!document.querySelector('.nbq-jobdetail')"), 20,
             "the job detail")
        detail = session.js("return document.querySelector('.nbq-jobdetail').innerText")
        assert "bad input 7" in detail and "ValueError" in detail
        traceback = session.js("const p = document.querySelector('.nbq-tb pre');"
                               "return p ? p.innerText : '';")
        assert "Traceback" in traceback and "in work" in traceback
        assert "ValueError: bad input 7" in traceback
        session.js("document.querySelector('.nbq-drill').scrollIntoView()")
        session.screenshot("05-failed-job-detail")
        assert _cut_text(session) == []
        # Obliterate (in the job list's bar) asks first too.
        session.js("document.querySelector(\"button[data-action='obliterate']\").click()")
        wait(lambda: session.js("return !!document.querySelector('.nbq-confirm')"), 10,
             "the obliterate confirmation")
        assert "Obliterate deletes queue reports" in session.js(
            "return document.querySelector('.nbq-confirm').innerText")
        session.js("document.querySelector(\".nbq-confirm button[data-action='cancel-confirm']\")"
                   ".click()")
        assert r.exists("nbq:{reports}:meta") or r.zcard("nbq:{reports}:failed") == 1
        session.js("document.querySelector(\"button[data-action='close-drill']\").click()")

        # Re-running the panel cell leaves one refresher.
        session.run_cell(1)
        session.wait_cell_done(1, 60)
        session.run_cell(1)
        session.wait_cell_done(1, 60)
        wait(lambda: session.js("return document.querySelectorAll('.nbq-row').length") == 5,
             60, "the re-run panel")
        session.run_cell(4)
        session.wait_cell_done(4, 60)
        assert "refreshers: 1" in session.cell_text(4)

        # Save; reopen without the kernel: the output shows the last state, not an error.
        session.run_cell(5)
        session.wait_cell_done(5, 60)
        assert "closed" in session.cell_text(5)
        time.sleep(1)
        session.save()
        saved = json.loads((tmp_path / "panel.ipynb").read_text())
        snaps = ["".join(o["data"]["text/html"]) for o in saved["cells"][1]["outputs"]
                 if "text/html" in o.get("data", {})]
        assert len(snaps) == 1 and "nbqueue-snapshot" in snaps[0]
        assert "payments-eu-west-1" in snaps[0] and "refresh stopped" in snaps[0]
        session.js_async("await window.jupyterapp.commands.execute('kernelmenu:shutdown');"
                         "return 'ok';")
        wait(lambda: session.kernel_status() in ("none", "dead", "unknown"), 30,
             "the kernel to stop")
        session.driver.refresh()
        wait(lambda: session.js("return !!document.querySelector('.nbqueue-snapshot')"), 120,
             "the reopened notebook")
        time.sleep(3)  # let the widget renderer give up on the (gone) model
        session.js("document.querySelector('.nbqueue-snapshot').scrollIntoView()")
        visible = session.js("const s = document.querySelector('.nbqueue-snapshot');"
                             "return s.offsetParent !== null && s.innerText;")
        assert visible and "payments-eu-west-1" in visible
        errors = session.js("return [...document.querySelectorAll('.jupyter-widgets')]"
                            ".filter(e => e.offsetParent !== null && "
                            "e.innerText.includes('model not found')).length")
        assert errors == 0
        session.screenshot("06-reopened-without-kernel")


def test_a_click_while_the_kernel_is_busy_is_shown_pending(browser_paths, redis_server,
                                                            tmp_path: Path) -> None:
    """Where clicks cannot run during a cell (here: subshell routing switched off, as on a
    kernel without it), a click shows at once as pending, can be cancelled, and otherwise
    runs when the cell ends, visibly."""
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    for key in r.scan_iter("nbq:*"):
        r.delete(key)
    setup = ("import time, nbqueue\nfrom nbqueue import queue_manager as qm\n"
             "qm.get_queue('emails').add({'type': 'send', 'payload': {}})\nprint('ready')")
    cells = [setup, "panel = nbqueue.dashboard(refresh=0.5)\npanel",
             "time.sleep(12)\nprint('slept')", "qm.close()\nprint('closed')"]
    (tmp_path / "busy.ipynb").write_text(json.dumps(notebook(cells)))
    env = {"NBQUEUE_REDIS_URL": redis_server.url, "NBQUEUE_HOME": str(tmp_path / "home"),
           "NBQUEUE_PANEL_SUBSHELL": "0"}
    with lab(tmp_path, env, SHOTS) as session:
        session.open_notebook("busy.ipynb")
        session.show_file_browser()
        session.run_cell(0)
        session.wait_cell_done(0, 120)
        session.run_cell(1)
        wait(lambda: session.js("return document.querySelectorAll('.nbq-row').length") == 1,
             60, "the panel")
        session.run_cell(2)
        wait(lambda: session.js("return document.querySelector('.nbq-kernel') &&"
                                " document.querySelector('.nbq-kernel').className"
                                ".includes('busy')"), 20, "the panel to show the busy kernel")
        _row_button(session, "emails", "pause")
        pending = wait(lambda: session.js("const p = document.querySelector('.nbq-pending');"
                                          "return p && p.innerText;"), 5, "the pending click")
        assert "waits for the running cell" in pending
        session.screenshot("07-pending-click")
        session.js("document.querySelector(\"button[data-action='cancel-pending']\").click()")
        assert not session.js("return !!document.querySelector('.nbq-pending')")
        _row_button(session, "emails", "pause")  # this one is kept: it runs after the cell
        assert session.js("return !!document.querySelector('.nbq-pending')")
        assert not _paused(r, "emails")
        session.wait_cell_done(2, 60)
        wait(lambda: _paused(r, "emails"), 20, "the held click to run after the cell")
        wait(lambda: not session.js("return !!document.querySelector('.nbq-pending')"), 20,
             "the pending note to clear")
        assert "paused emails" in session.js("return document.querySelector('.nbq-msg')"
                                             ".innerText")
        session.run_cell(3)
        session.wait_cell_done(3, 60)
