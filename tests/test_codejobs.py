"""Signed code jobs: only allow_code workers run them, after checking the HMAC signature."""

from __future__ import annotations

import time

import pytest

from nbqueue import JobFailedError, Queue, UnrecoverableError, Worker
from nbqueue.codejobs import (
    CodeJobProcessor,
    CodeSignatureError,
    add_code_job,
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
    def __init__(self, data: dict, name: str | None = None, queue_name: str = "q",
                 id: str = "code-1", timestamp: int = 1_000) -> None:
        self.data = data
        self.name = name or data.get("type", "")
        self.queue_name, self.id, self.timestamp = queue_name, id, timestamp


def _signed(code: str, secret: bytes | str | None = SECRET) -> dict:
    return make_code_job(code, secret, queue="q", job_id="code-1", now=1_000)


def test_sign_and_verify() -> None:
    data = _signed("1 + 1")
    assert data["type"] == "__code__"
    assert set(data["payload"]) == {"code", "queue", "job_id", "ts", "exp", "sig"}
    assert verify(data, SECRET) == "1 + 1"
    assert verify(data, SECRET, queue="q", job_id="code-1", added_at=1_000) == "1 + 1"
    with pytest.raises(CodeSignatureError):
        verify(data, b"another-secret")
    tampered = {**data, "payload": {**data["payload"], "code": "2 + 2"}}
    with pytest.raises(SignatureError, match="does not match"):
        verify(tampered, SECRET)
    unsigned = {"type": "__code__", "payload": {"code": "1", "ts": 1}}
    with pytest.raises(UnrecoverableError, match="not signed"):
        verify(unsigned, SECRET)
    assert sign("x", 5, SECRET) != sign("x", 6, SECRET)  # the timestamp is signed too
    # and so are the queue, the job id and the expiry
    assert sign("x", 5, SECRET, queue="a") != sign("x", 5, SECRET, queue="b")
    assert sign("x", 5, SECRET, job_id="1") != sign("x", 5, SECRET, job_id="2")
    assert sign("x", 5, SECRET, exp=6) != sign("x", 5, SECRET, exp=7)
    old_format = {"type": "__code__", "payload": {"code": "1", "ts": 1, "sig": sign("1", 1)}}
    with pytest.raises(CodeSignatureError, match="not bound"):
        verify(old_format, SECRET)


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
    assert wrapped(_FakeJob(_signed("[1, 2][1]"))) == 2
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
    good = add_code_job(q, "sum(range(10))", secret=SECRET, attempts=3)
    unsigned = q.add({"type": "__code__", "payload": {"code": evil, "ts": 1}}, attempts=3)
    now = q._run(q._ops.server_time())
    signed_evil = make_code_job("'harmless'", SECRET, queue="code", job_id="code-t", now=now)
    signed_evil["payload"]["code"] = evil  # tampered after signing
    tampered = q.add(signed_evil, attempts=3, job_id="code-t")
    forged = add_code_job(q, evil, secret=b"wrong-secret", attempts=3)
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
    job = add_code_job(q, "1 + 1", attempts=1)
    with Worker("nocode", lambda j: f"plain processor saw {j.name}", conn):
        assert job.result(timeout=20) == "plain processor saw __code__"


def test_process_mode_children_get_the_secret(conn) -> None:
    q = Queue("code-proc", conn)
    job = add_code_job(q, "import os\nos.getpid()")  # default: this process's secret
    with Worker("code-proc", None, conn, allow_code=True, mode="process", processes=1):
        pid = job.result(timeout=60)
    import os

    assert isinstance(pid, int) and pid != os.getpid()


def test_code_job_result_must_be_json(conn) -> None:
    q = Queue("code-json", conn)
    job = add_code_job(q, "object()", secret=SECRET, attempts=1)
    with Worker("code-json", None, conn, allow_code=True, secret=SECRET),\
            pytest.raises(JobFailedError, match="JSON"):
        job.result(timeout=20)


async def _async_proc(job):
    return "async " + job.name


def test_async_processor_wrapped(conn) -> None:
    q = Queue("code-async", conn)
    plain = q.add({"type": "t", "payload": {}})
    code = add_code_job(q, "3 * 3", secret=SECRET)
    with Worker("code-async", _async_proc, conn, allow_code=True, secret=SECRET):
        assert plain.result(timeout=20) == "async t"
        assert code.result(timeout=20) == 9


# -- replays (issue 12 item 6): a signed job's stored data runs nowhere else, and not later ----
def _stored_data(q: Queue, job_id: str) -> dict:
    return q.get_job(job_id).data


def test_replayed_code_jobs_run_nothing(conn, r, tmp_path) -> None:
    qa, qb = Queue("code-a", conn), Queue("code-b", conn)
    marker = tmp_path / "runs"
    code = f"open({str(marker)!r}, 'a').write('x')\n'ran'"
    original = add_code_job(qa, code, secret=SECRET)
    with Worker("code-a", None, conn, allow_code=True, secret=SECRET), \
            Worker("code-b", None, conn, allow_code=True, secret=SECRET):
        assert original.result(timeout=20) == "ran"
        stolen = _stored_data(qa, original.id)
        replays = [
            # 1. the same data re-added to the same queue (it gets another id)
            (qa, qa.add(stolen)),
            # 2. ...to another code-allowed queue, under its own id and under another
            (qb, qb.add(stolen, job_id=original.id)),
            (qb, qb.add(stolen)),
        ]
        # 3. re-signed (with the secret) but with an old timestamp: expired at add
        now = qa._run(qa._ops.server_time())
        old = make_code_job(code, SECRET, queue="code-a", job_id="code-old", now=now - 600_000)
        replays.append((qa, qa.add(old, job_id="code-old")))
        # 4. a short expiry, added after it passed
        brief = make_code_job(code, SECRET, queue="code-a", job_id="code-brief", now=now,
                              ttl=1)
        time.sleep(0.05)
        replays.append((qa, qa.add(brief, job_id="code-brief")))
        # the same data under the original id in its own queue is the original job itself
        assert qa.add(stolen, job_id=original.id).id == original.id
        reasons = []
        for q, job in replays:
            _wait_state(q, job.id, "failed")
            st = q.get_job_status(job.id)
            assert st.error_type == "unrecoverable" and st.attempts_made == 1
            reasons.append(st.failed_reason)
    assert marker.read_text() == "x", "only the original ran"
    assert "signed for job" in reasons[0]
    assert "signed for queue 'code-a', not 'code-b'" in reasons[1]
    assert "signed for queue" in reasons[2]
    assert "expired" in reasons[3] and "expired" in reasons[4]


def test_code_job_ttl_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbqueue import codejobs

    assert codejobs.default_ttl_ms() == codejobs.DEFAULT_TTL_MS
    monkeypatch.setenv("NBQUEUE_CODE_JOB_TTL", "5000")
    data = make_code_job("1", SECRET, queue="q", job_id="code-1", now=1_000)
    assert data["payload"]["exp"] == 6_000
    monkeypatch.setenv("NBQUEUE_CODE_JOB_TTL", "soon")
    with pytest.raises(ValueError, match="NBQUEUE_CODE_JOB_TTL"):
        make_code_job("1", SECRET, queue="q", job_id="code-1", now=1_000)
    with pytest.raises(ValueError, match="one queue and one job id"):
        make_code_job("1", SECRET, queue="", job_id="code-1", now=1_000)
