"""A panel click sent while a cell waits in ``job.result()``, at the kernel protocol level.

A real ipykernel (jupyter_client) runs the cells; the test sends the click exactly as a
frontend does (a ``comm_msg`` on the shell channel for the panel's comm) while the cell is
blocked, and watches Redis. What happens depends on what the installed kernel allows (see
``nbqueue.kernel``):

- ipykernel 7.4+ with subshell routing: the click runs at once;
- ipykernel 6: nbqueue's wait loop processes it (cooperative), within about a second;
- routing switched off on ipykernel 7 (``NBQUEUE_PANEL_SUBSHELL=0``): the kernel cannot run
  it during the cell; it runs when the cell ends (the browser test checks that the panel
  shows it as pending meanwhile).
"""

from __future__ import annotations

import os
import queue as _queue
import time
from typing import Any

import pytest
import redis

jupyter_client = pytest.importorskip("jupyter_client")
ipykernel = pytest.importorskip("ipykernel")

IPYKERNEL_MAJOR = int(ipykernel.__version__.split(".")[0])

SETUP = """
import time, nbqueue
from nbqueue import queue_manager as qm
from IPython.display import display
q = qm.get_queue("kclick")
qm.register_processor("kclick", lambda job: time.sleep(job.payload["secs"]) or "done")
qm.start_worker("kclick")
panel = nbqueue.dashboard(["kclick"], refresh=0.5)
display(panel)
print("COMM", panel.comm.comm_id, panel.kernel)
"""
WAIT = 'job = q.add({"type": "slow", "payload": {"secs": 8}})\nprint(job.result(timeout=60))'


def _run(kc: Any, code: str, timeout: float = 60) -> tuple[str, str]:
    """Execute ``code``; (stdout, msg_id) once its reply came."""
    msg_id = kc.execute(code)
    out = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except _queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out += msg["content"]["text"]
        elif msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return out, msg_id
    raise AssertionError(f"cell did not finish: {code!r}")


def _click(kc: Any, comm_id: str, action: str, queue: str) -> None:
    content = {"comm_id": comm_id,
               "data": {"method": "custom",
                        "content": {"id": 1, "action": action, "queue": queue}}}
    kc.shell_channel.send(kc.session.msg("comm_msg", content))


@pytest.mark.parametrize("subshell", ["1", "0"])
def test_pause_clicked_while_a_cell_waits_in_job_result(redis_server, tmp_path,
                                                         subshell: str) -> None:
    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    for key in r.scan_iter("nbq:{kclick}*"):
        r.delete(key)
    env = {**os.environ, "NBQUEUE_REDIS_URL": redis_server.url,
           "NBQUEUE_HOME": str(tmp_path / "home"), "NBQUEUE_PANEL_SUBSHELL": subshell}
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name="python3", env=env,
                                                     cwd=str(tmp_path))
    try:
        out, _ = _run(kc, SETUP)
        comm_id, state = out.split("COMM ")[1].split()[:2]
        routed = state == "concurrent"
        assert routed == (subshell == "1" and IPYKERNEL_MAJOR >= 7)
        msg_id = kc.execute(WAIT)
        deadline = time.monotonic() + 30
        while r.zcard("nbq:{kclick}:active") < 1:
            assert time.monotonic() < deadline, "the slow job did not start"
            time.sleep(0.05)
        _click(kc, comm_id, "pause", "kclick")
        t0 = time.monotonic()
        runs_now = routed or IPYKERNEL_MAJOR < 7  # subshell, or cooperative processing
        paused_during_cell = False
        while time.monotonic() - t0 < 4:
            if r.hget("nbq:{kclick}:meta", "paused") == "1":
                paused_during_cell = r.zcard("nbq:{kclick}:active") == 1
                break
            time.sleep(0.05)
        assert paused_during_cell == runs_now
        # The cell ends (the job was already running); a held click runs then.
        while True:
            msg = kc.get_iopub_msg(timeout=60)
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                break
        deadline = time.monotonic() + 10
        while r.hget("nbq:{kclick}:meta", "paused") != "1":
            assert time.monotonic() < deadline, "the click never ran"
            time.sleep(0.05)
        out, _ = _run(kc, "qm.close()\nimport threading\nprint(sum(t.name == "
                          "'nbqueue-dashboard' and t.is_alive() for t in "
                          "threading.enumerate()))")
        assert out.strip() == "0"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
