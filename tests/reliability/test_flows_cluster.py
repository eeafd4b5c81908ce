"""Job dependencies on a 3-master Redis Cluster: queues in different slots (and nodes), the
protocol's steps each in one slot, and a crash between steps recovered there too."""

from __future__ import annotations

import pytest
from redis.cluster import key_slot
from test_cluster import cluster_url  # noqa: F401  (the module's 3-master cluster)

import nbqueue
from nbqueue import JobState, Queue, Worker, flows
from nbqueue.keys import QueueKeys
from tests.test_flows import crash_between_add_and_register, crash_between_finish_and_resolve

pytestmark = pytest.mark.reliability


@pytest.fixture
def fast_flows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flows, "RECHECK_MS", 300)
    monkeypatch.setattr(flows, "UPKEEP_S", 0.2)


def _apart(conn: nbqueue.Connection, a: str, b: str) -> None:
    """The two queues live in different slots, served by different masters."""
    sa, sb = (key_slot(QueueKeys(n).base.encode()) for n in (a, b))
    assert sa != sb
    client = conn.sync()
    na = client.get_node_from_key(QueueKeys(a).base)
    nb = client.get_node_from_key(QueueKeys(b).base)
    assert na.name != nb.name, (a, b, na, nb)


def _names(conn: nbqueue.Connection, stem: str) -> tuple[str, str]:
    """A child and a parent queue name on different masters."""
    client = conn.sync()
    child = f"{stem}-child"
    node = client.get_node_from_key(QueueKeys(child).base).name
    for i in range(100):
        parent = f"{stem}-parent{i}"
        if client.get_node_from_key(QueueKeys(parent).base).name != node:
            return child, parent
    raise AssertionError("no queue name on another node")


def test_cluster_fan_in_and_failure_across_nodes(cluster_url: str) -> None:  # noqa: F811
    conn = nbqueue.connect(cluster_url)
    child, parent = _names(conn, "cf")
    _apart(conn, child, parent)
    cq, pq = Queue(child, conn), Queue(parent, conn)
    batch = cq.map([{"type": "n", "payload": i} for i in range(5)])
    total = pq.add({"type": "sum"}, depends_on=list(batch))
    bad = cq.add({"type": "bad"})
    doomed = pq.add({"type": "never"}, depends_on=[bad, batch[0]])
    assert total.state is JobState.WAITING_CHILDREN

    def work(job):
        if job.name == "bad":
            raise nbqueue.UnrecoverableError("broken chunk")
        return job.payload * 3

    with Worker(child, work, conn, concurrency=2), \
            Worker(parent, lambda job: sum(job.dependency_results().values()), conn):
        assert total.result(timeout=30) == 3 * sum(range(5))
        with pytest.raises(nbqueue.JobFailedError, match="broken chunk") as info:
            doomed.result(timeout=30)
    assert info.value.error_type == "dependency_failed"
    assert pq.get_metrics().waiting_children == 0


def test_cluster_crash_between_add_and_register(cluster_url: str, fast_flows: None) -> None:  # noqa: F811
    conn = nbqueue.connect(cluster_url)
    child, parent = _names(conn, "car")
    crash_between_add_and_register(conn, Queue(child, conn), Queue(parent, conn))


def test_cluster_crash_between_finish_and_resolve(cluster_url: str, fast_flows: None) -> None:  # noqa: F811
    conn = nbqueue.connect(cluster_url)
    child, parent = _names(conn, "cfr")
    crash_between_finish_and_resolve(conn, Queue(child, conn), Queue(parent, conn))


def test_cluster_retry_re_arms_the_fan_in_across_nodes(cluster_url: str) -> None:  # noqa: F811
    """DESIGN "Fan-in is never partial" on a cluster: the retried chunk is in one slot, its
    failed fan-in in another (on another master); the batch's retry re-arms the fan-in,
    which completes with every chunk's current result."""
    conn = nbqueue.connect(cluster_url)
    child, parent = _names(conn, "rearm")
    _apart(conn, child, parent)
    cq, pq = Queue(child, conn), Queue(parent, conn)
    batch = cq.map([{"type": "n", "payload": i} for i in range(6)])
    total = pq.add({"type": "sum"}, depends_on=list(batch))
    broken = {4}

    def work(job):
        if job.name == "sum":
            return sorted(job.dependency_results().values())
        if job.payload in broken:
            raise ValueError("broken chunk")
        return job.payload * 3

    with Worker(child, work, conn, concurrency=2), Worker(parent, work, conn):
        with pytest.raises(nbqueue.JobFailedError):
            total.result(timeout=30)
        batch.wait(timeout=30, progress=False)
        broken.clear()
        assert batch.retry_failed() == 1
        assert total.result(timeout=30) == [i * 3 for i in range(6)]
