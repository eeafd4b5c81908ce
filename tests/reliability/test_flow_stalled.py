"""Issue 21 item 8: a flow child failed as ``stalled`` fails its parent at once.

The child's worker is SIGKILLed mid-job; another worker's stalled sweep fails the child
(``max_stalled_count=0``). Before: the parent learnt of it only at the flows re-check
(``flows.UPKEEP_S``, 30 s) -- the sweep queued no dependency notification. Now the sweep
notifies the parents in the same script and the sweeping worker delivers the notification
right away, like a finish does.
"""

from __future__ import annotations

import signal
import time

import pytest
from rhelpers import check_states, spawn_worker, wait_until

from nbqueue import Queue, Worker, connect

pytestmark = pytest.mark.reliability


def test_a_child_failed_as_stalled_fails_its_parent_at_once(fresh_server, tmp_path) -> None:
    r = fresh_server.client()
    conn = connect(fresh_server.url)
    kids, parents = Queue("kids", conn), Queue("parents", conn)
    child = kids.add({"n": 1})
    parent = parents.add({"sum": True}, depends_on=[child])
    assert parent.get_state() == "waiting-children"
    proc = spawn_worker(fresh_server.url, "kids", concurrency=1, lock=1000, stalled=1000,
                        max_stalled=0, sleep=120, log=tmp_path / "w.log")
    try:
        assert wait_until(lambda: r.hget("rt:runs:{kids}", child.id) == "1", 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    sweeper = Worker("kids", lambda job: None, conn, lock_duration=1000,
                     stalled_interval=500, max_stalled_count=0)
    sweeper.start()
    try:
        assert wait_until(lambda: child.get_state() == "failed", 20)
        failed_at = time.monotonic()
        assert r.hget("nbq:{kids}:job:" + child.id, "et") == "stalled"
        # old code: the parent stays waiting-children until the 30 s re-check
        assert wait_until(lambda: parent.get_state() == "failed", 10), parent.get_state()
        took = time.monotonic() - failed_at
    finally:
        sweeper.stop()
    print(f"[flow-stalled] child failed as stalled -> parent failed in {took:.2f} s")
    assert took < 10
    rec = r.hgetall("nbq:{parents}:job:" + parent.id)
    assert rec["et"] == "dependency_failed", rec
    assert check_states(r, "kids") == [] and check_states(r, "parents") == []
