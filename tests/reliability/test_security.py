"""Issue 7: JSON only (no unpickling), signed code jobs, rediss:// and ACL users, no
secrets in logs, reprs or events."""

from __future__ import annotations

import logging
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
from redisproc import RedisProcess, free_port
from rhelpers import check_states, wait_until

import nbqueue
from nbqueue import Queue, Worker, connect

pytestmark = pytest.mark.reliability


class _Boom:
    """Unpickling this creates a file: proof that something unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocols", [
    (0, 0, 0),  # ASCII pickles: valid UTF-8, invalid JSON -> failed as corrupt
    (2, 5, 5),  # binary pickles: not UTF-8 -> decoded with U+FFFD, failed as corrupt
])
def test_pickle_in_job_data_is_never_unpickled(fresh_server, tmp_path, protocols):
    url = fresh_server.url
    raw = redis.Redis.from_url(url)  # bytes in, bytes out
    r = redis.Redis.from_url(url, decode_responses=True)
    conn = connect(url)
    q = Queue("sec", conn)
    canaries = [tmp_path / f"pwned{i}" for i in range(3)]
    jobs = q.add_bulk([{"type": "p", "payload": i} for i in range(3)])
    for job, proto, canary in zip(jobs, protocols, canaries):
        raw.hset(f"nbq:{{sec}}:job:{job.id}", "data", pickle.dumps(_Boom(str(canary)), proto))
    # a pickled *result* too
    done = q.add({"type": "p", "payload": "r"})
    ran: list[str] = []
    w = Worker("sec", lambda job: ran.append(job.id), conn, concurrency=2).start()
    try:
        assert wait_until(lambda: q.get_metrics().waiting == 0
                          and q.get_metrics().active == 0, 8), q.get_metrics()
        assert w.is_running
        raw.hset(f"nbq:{{sec}}:job:{done.id}", "rv", pickle.dumps(_Boom(str(canaries[0])), 0))
        for job in [*jobs, done]:
            q.get_job(job.id)
            q.get_job_status(job.id)
            q.get_jobs(["completed", "failed"])
            try:
                q.get_job(job.id).result(timeout=1)
            except (nbqueue.NbqueueError, ValueError):
                pass
        later = q.add({"type": "p", "payload": "after"})
        assert later.result(timeout=10) is None
    finally:
        w.stop(timeout=1)
    assert not any(c.exists() for c in canaries), "a pickle was unpickled"
    assert not set(ran) & {j.id for j in jobs}, "a processor received pickled data"
    for job in jobs:
        assert r.hget(f"nbq:{{sec}}:job:{job.id}", "state") == "failed"
    assert check_states(r, "sec") == []


def test_code_jobs_need_allow_code_and_a_valid_hmac(fresh_server):
    try:
        from nbqueue import codejobs
    except ImportError:
        pytest.skip("nbqueue.codejobs is not implemented")
    conn = connect(fresh_server.url)
    q = Queue("code", conn)
    marker = Path(fresh_server.dir) / "code-ran"
    code = f"open({str(marker)!r}, 'w').write('x'); 42"
    now = q._run(q._ops.server_time())

    def bound(job_id: str, secret: str) -> dict:  # signed for this queue and job id
        return codejobs.make_code_job(code, secret, queue="code", job_id=job_id, now=now)

    signed = bound("code-f", "s3cret-key")
    forged = dict(signed, payload=dict(signed["payload"], sig="0" * 64))
    unsigned = {"type": codejobs.CODE_JOB_TYPE, "payload": {"code": code}}
    other_key = bound("code-o", "another-key")
    plain_seen: list[object] = []
    # 1. a worker without allow_code never executes code jobs, even validly signed ones
    w = Worker("code", lambda job: plain_seen.append(job.data), conn).start()
    try:
        j = codejobs.add_code_job(q, code, secret="s3cret-key")
        try:
            j.result(timeout=10)
        except nbqueue.JobFailedError:
            pass
    finally:
        w.stop()
    assert not marker.exists()
    # 2. allow_code=True: forged, unsigned and wrongly keyed jobs fail unrecoverably
    w = Worker("code", None, conn, allow_code=True, secret="s3cret-key").start()
    try:
        for bad, jid in ((forged, "code-f"), (unsigned, None), (other_key, "code-o")):
            with pytest.raises(nbqueue.JobFailedError):
                q.add(bad, job_id=jid).result(timeout=10)
        assert not marker.exists()
        # the genuine one runs
        assert codejobs.add_code_job(q, code, secret="s3cret-key").result(timeout=10) == 42
        assert marker.exists()
        assert "s3cret-key" not in repr(w) and "s3cret-key" not in repr(w.processor)
    finally:
        w.stop()


def test_rediss_tls_connects(tmp_path):
    binary = shutil.which("redis-server")
    openssl = shutil.which("openssl")
    if not binary or not openssl:
        pytest.skip("redis-server or openssl CLI not available")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    proc = RedisProcess(args=["--port", "0", "--tls-port", str(port), "--tls-cert-file",
                              str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                              str(cert), "--tls-auth-clients", "no"])
    proc.ping = lambda: _tls_ping(port, cert)  # type: ignore[method-assign]
    try:
        try:
            proc.start()
        except RuntimeError as exc:
            if "tls" in str(exc).lower() or "ssl" in str(exc).lower():
                pytest.skip(f"this redis-server was built without TLS: {exc}")
            raise
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        conn = connect(url)
        q = Queue("tls", conn)
        with Worker("tls", lambda job: job.data["payload"] + 1, conn):
            assert q.add({"type": "t", "payload": 41}).result(timeout=10) == 42
        # and a plain redis:// to a TLS-only port fails clearly (no hang)
        with pytest.raises(nbqueue.RedisUnavailableError):
            connect(f"redis://127.0.0.1:{port}/0")
        conn.close()
    finally:
        proc.cleanup()


def _tls_ping(port: int, cert: Path) -> bool:
    c = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert),
                    socket_connect_timeout=0.5, socket_timeout=1)
    try:
        return bool(c.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        c.close()


ACL_PASSWORD = "pa55-Secr3t-XyZ"


def test_acl_user_limited_to_its_queue_and_secrets_never_leak(fresh_server, caplog):
    admin = redis.Redis.from_url(fresh_server.url, decode_responses=True)
    admin.execute_command(
        "ACL", "SETUSER", "nbq", "on", f">{ACL_PASSWORD}", "resetkeys",
        "~nbq:{myqueue}:*", "~nbq:{dead_letter}:*", "resetchannels", "-@all",
        "+@read", "+@write", "+@scripting", "+@connection", "+@stream", "+@list",
        "+@sortedset", "+@hash", "+@string", "+@keyspace", "+@blocking", "+time", "+info",
        "-@dangerous", "+ping")
    url = f"redis://nbq:{ACL_PASSWORD}@127.0.0.1:{fresh_server.port}/0"
    caplog.set_level(logging.DEBUG)
    conn = connect(url)
    q = Queue("myqueue", conn)
    events_seen: list[str] = []

    def work(job):  # type: ignore[no-untyped-def]
        if job.data["payload"] == "fail":
            raise ValueError("boom")
        return "ok"

    w = Worker("myqueue", work, conn, concurrency=2)
    with w:
        assert q.add({"type": "t", "payload": 1}).result(timeout=10) == "ok"
        with pytest.raises(nbqueue.JobFailedError):
            q.add({"type": "t", "payload": "fail"}).result(timeout=10)
        dlq = Queue("dead_letter", conn)
        assert wait_until(lambda: dlq.get_metrics().waiting >= 1, 10)
        delayed = q.add({"type": "t", "payload": 2}, delay=200)
        assert delayed.result(timeout=10) == "ok"
        _, evs = q.read_events("0")
        events_seen = [repr(e) for e in evs]
    # the ACL is real: another queue's keys are refused
    with pytest.raises(redis.RedisError, match=r"(?i)no permissions|NOPERM"):
        Queue("other", conn).add({"type": "t"})
    # a wrong password / a dead port: errors name the URL with the password masked
    with pytest.raises(nbqueue.RedisUnavailableError) as info:
        connect(f"redis://nbq:{ACL_PASSWORD}@127.0.0.1:{free_port()}/0")
    texts = [repr(conn), str(conn), repr(q), repr(w), str(info.value), conn.masked_url,
             *events_seen, caplog.text, repr(Queue("myqueue", url))]
    for t in texts:
        assert ACL_PASSWORD not in t, t
    assert "***" in str(info.value)
    conn.close()
