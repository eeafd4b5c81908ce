"""Errors: one module, each raised where it says (against a real Redis)."""

from __future__ import annotations

import inspect

import pytest

import nbqueue
from nbqueue import (
    JobActiveError,
    JobStateError,
    NbqueueError,
    Queue,
    QueueBusyError,
    ResultTimeoutError,
    errors,
)
from nbqueue.protocol import run_sync


def test_every_error_is_an_nbqueue_error_exported_by_the_package() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, BaseException) and c.__module__ == errors.__name__]
    assert len(classes) >= 10
    for cls in classes:
        # warnings (IncompleteResultsWarning) are not errors; exported all the same
        assert issubclass(cls, NbqueueError) or issubclass(cls, Warning), cls
        assert getattr(nbqueue, cls.__name__) is cls, f"nbqueue.{cls.__name__} missing"


def test_an_active_job_cannot_be_removed_and_its_queue_not_obliterated(conn) -> None:
    q = Queue("busy", conn)
    job = q.add({"type": "t"})
    # a worker's fetch, alone: the job is now active (locked)
    fetched = run_sync(conn.sync(), q._ops.fetch(1, "worker-1", 30_000))
    assert [r.id for r in fetched.jobs] == [job.id]
    with pytest.raises(JobActiveError, match="is active") as exc:
        q.remove(job.id)
    assert isinstance(exc.value, JobStateError)
    with pytest.raises(QueueBusyError, match="active jobs"):
        q.obliterate()
    assert q.get_job_status(job.id) is not None  # neither call changed anything
    assert q.obliterate(force=True) >= 1


def test_result_timeout_is_an_nbqueue_error_and_a_builtin_timeout(conn) -> None:
    job = Queue("slowpoke", conn).add({"type": "t"})  # no worker: never finishes
    with pytest.raises(ResultTimeoutError, match="did not finish") as exc:
        job.result(timeout=0.2)
    assert isinstance(exc.value, NbqueueError) and isinstance(exc.value, TimeoutError)
