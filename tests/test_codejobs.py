"""Signed code jobs: only allow_code workers run them, after checking the HMAC signature."""

from __future__ import annotations

import time

import pytest

from nbqueue import JobFailedError, Queue, UnrecoverableError, Worker
from nbqueue.codejobs import (
    CodeJobProcessor,
    CodeSignatureError,
    get_secret,
    make_code_job,
    run_code,
    sign,
    verify,
    wrap_processor,
)
from nbqueue.errors import SignatureError

SECRET = b"test-secret"


class _FakeJob:
    def __init__(self, data: dict, name: str | None = None) -> None:
        self.data = data
        self.name = name or data.get("type", "")


def test_sign_and_verify() -> None:
    data = make_code_job("1 + 1", SECRET)
    assert data["type"] == "__code__" and set(data["payload"]) == {"code", "ts", "sig"}
    assert verify(data, SECRET) == "1 + 1"
    with pytest.raises(CodeSignatureError):
        verify(data, b"another-secret")
    tampered = {**data, "payload": {**data["payload"], "code": "2 + 2"}}
    with pytest.raises(SignatureError, match="does not match"):
        verify(tampered, SECRET)
    unsigned = {"type": "__code__", "payload": {"code": "1", "ts": 1}}
    with pytest.raises(UnrecoverableError, match="not signed"):
        verify(unsigned, SECRET)
    assert sign("x", 5, SECRET) != sign("x", 6, SECRET)  # the timestamp is signed too


def test_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBQUEUE_SECRET", "from-env")
    assert get_secret() == b"from-env"
    monkeypatch.delenv("NBQUEUE_SECRET")
    generated = get_secret()
    assert len(generated) == 64 and get_secret() == generated  # stable per process


def test_run_code_returns_last_expression() -> None:
    assert run_code("x = 2\ny = 3\nx * y") == 6
    assert run_code("x = 2") is None
    assert run_code("job.data['n'] + 1", _FakeJob({"type": "t", "n": 4})) == 5


def test_wrap_processor_dispatch() -> None:
    seen = []
    wrapped = wrap_processor(lambda job: seen.append(job.name) or "plain", SECRET)
    assert isinstance(wrapped, CodeJobProcessor)
    assert wrapped(_FakeJob({"type": "other", "payload": {}})) == "plain"
    assert wrapped(_FakeJob(make_code_job("[1, 2][1]", SECRET))) == 2
    assert seen == ["other"]
    code_only = wrap_processor(None, SECRET)
    with pytest.raises(UnrecoverableError, match="only runs code jobs"):
        code_only(_FakeJob({"type": "other", "payload": {}}))
    # the same processor gives the same wrapper (a re-run cell reuses its worker)
    f = len
    assert wrap_processor(f, SECRET) is wrap_processor(f, SECRET)


def _wait_state(q: Queue, job_id: str, state: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while q.get_job(job_id).get_state() != state:
        assert time.monotonic() < deadline, f"job {job_id} never reached {state}"
        time.sleep(0.05)


def test_worker_runs_signed_and_refuses_unsigned_and_tampered(conn, r, tmp_path) -> None:
    q = Queue("code", conn)
    marker = tmp_path / "ran"
    evil = f"open({str(marker)!r}, 'w').write('x')\n'ran'"
    good = q.add(make_code_job("sum(range(10))", SECRET), attempts=3)
    unsigned = q.add({"type": "__code__", "payload": {"code": evil, "ts": 1}}, attempts=3)
    signed_evil = make_code_job("'harmless'", SECRET)
    signed_evil["payload"]["code"] = evil  # tampered after signing
    tampered = q.add(signed_evil, attempts=3)
    forged = q.add(make_code_job(evil, b"wrong-secret"), attempts=3)
    with Worker("code", None, conn, allow_code=True, secret=SECRET):
        assert good.result(timeout=20) == 45
        for job in (unsigned, tampered, forged):
            _wait_state(q, job.id, "failed")
            with pytest.raises(JobFailedError):
                job.result(timeout=5)
    assert not marker.exists(), "refused code must never run"
    for job in (unsigned, tampered, forged):
        st = q.get_job_status(job.id)
        assert st.attempts_made == 1, "a signature failure is not retried"
        assert st.error_type == "unrecoverable"
    dead = Queue("dead_letter", conn).get_jobs("waiting", 0, 50)
    dead_ids = {d.payload["job_id"] for d in dead if d.payload.get("queue") == "code"}
    assert {unsigned.id, tampered.id, forged.id} <= dead_ids


def test_worker_without_allow_code_does_not_run_code(conn, tmp_path) -> None:
    q = Queue("nocode", conn)
    job = q.add(make_code_job("1 + 1"), attempts=1)
    with Worker("nocode", lambda j: f"plain processor saw {j.name}", conn):
        assert job.result(timeout=20) == "plain processor saw __code__"


def test_process_mode_children_get_the_secret(conn) -> None:
    q = Queue("code-proc", conn)
    job = q.add(make_code_job("import os\nos.getpid()"))  # default: this process's secret
    with Worker("code-proc", None, conn, allow_code=True, mode="process", processes=1):
        pid = job.result(timeout=60)
    import os

    assert isinstance(pid, int) and pid != os.getpid()


def test_code_job_result_must_be_json(conn) -> None:
    q = Queue("code-json", conn)
    job = q.add(make_code_job("object()", SECRET), attempts=1)
    with Worker("code-json", None, conn, allow_code=True, secret=SECRET),\
            pytest.raises(JobFailedError, match="JSON"):
        job.result(timeout=20)


async def _async_proc(job):
    return "async " + job.name


def test_async_processor_wrapped(conn) -> None:
    q = Queue("code-async", conn)
    plain = q.add({"type": "t", "payload": {}})
    code = q.add(make_code_job("3 * 3", SECRET))
    with Worker("code-async", _async_proc, conn, allow_code=True, secret=SECRET):
        assert plain.result(timeout=20) == "async t"
        assert code.result(timeout=20) == 9
