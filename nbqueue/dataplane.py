"""The data plane's operations (sans-I/O, see ``protocol``): frames into and out of jobs.

- ``add_frame_map``: ``Queue.map(df, chunksize=...)``. Each chunk is encoded as Arrow
  (``arrowcodec``), its bytes written to the store and its job added **in order**, in
  groups sent in one round trip each (the first chunk alone, so a worker starts on it while
  the later chunks are still being encoded and written). The Redis store stages a chunk's
  bytes under ``stage:<nonce>`` (with a ttl) in the same pipeline as the add; ``add.lua``
  renames that key to the job's ``art:<id>`` when it creates the job, so the bytes and the
  job appear together, and a crash in between leaves nothing that lives past the ttl.
- named batches (``name=``): a chunk's job id is ``<name>:<chunk>:<sha256[:16]>`` of its
  bytes; chunks whose job exists already are not written again, and their jobs come back
  as they are (a finished chunk is not run again). The batch's ids are kept in order under
  ``batch:<name>`` (``get_batch``).
- ``store_result``: a processor's DataFrame/Series/ndarray result becomes an artifact of
  its job (``art_put.lua``: written only while the job exists) and the job's result is the
  reference; ``resolve``/``resolve_many`` turn references back into values, checking the
  content hash.
- ``sweep``: delete the files of an fsspec store whose jobs are gone (``artgc``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import arrowcodec
from .artifacts import (
    REDIS_STORE,
    ArtifactRef,
    check_bytes,
    delete_urls,
    open_store,
    read_url,
)
from .errors import ArtifactError, BatchNotFoundError, InvalidOptionError
from .keys import QueueKeys
from .protocol import Batch, Call, Offload, Op, run_sync

if TYPE_CHECKING:
    from .ops import QueueOps
    from .records import JobRecord

__all__ = ["BatchReused", "add_frame_map", "add_named", "batch_ids", "chunk_ref",
           "resolve", "resolve_many", "store_result", "sweep", "validate_batch_name"]

STAGE_TTL_MS = 3_600_000  # staged chunk bytes not adopted by a job within this are dropped
GROUP_BYTES = 4_000_000  # chunk bytes per round trip (after the first chunk, sent alone)
GROUP_CHUNKS = 64
SWEEP_LIMIT = 500  # artifact files deleted per sweep step
MAX_BATCH_NAME = 100


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside nbqueue (the
    notebook cell), however deep in ops and executors it is raised (call it right in the
    function that warns)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


class BatchReused(UserWarning):
    """``Queue.map(..., name=N)`` with data that differs from the last map named N: the
    changed chunks got new jobs; the jobs of the old chunks remain (until retention)."""


def validate_batch_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidOptionError(f"a batch name must be a str, not {type(name).__name__}")
    if not name or len(name) > MAX_BATCH_NAME or any(c in name for c in "{}") \
            or any(c.isspace() for c in name):
        raise InvalidOptionError(
            f"a batch name needs 1..{MAX_BATCH_NAME} characters without braces or "
            f"whitespace: {name!r}")
    return name


def chunk_id(name: str, k: int, sha256: str) -> str:
    """The job id of chunk ``k`` of batch ``name`` whose content hash is ``sha256``."""
    return f"{name}:{k}:{sha256[:16]}"


# -- adding ---------------------------------------------------------------------------------
class _Pending:
    """One chunk on its way: its job data, options, and the bytes to write (if any)."""

    __slots__ = ("data", "encoded", "options", "sha")

    def __init__(self, data: dict[str, Any], options: Mapping[str, Any], sha: str,
                 encoded: arrowcodec.Encoded | None) -> None:
        self.data, self.options, self.sha, self.encoded = data, options, sha, encoded


def _with_art(ext: str, nonce: str) -> str:
    """add.lua's ext argument with ``art`` (the staged key to adopt) added."""
    body = json.loads(ext) if ext else {}
    body["art"] = nonce
    return json.dumps(body, separators=(",", ":"))


def _stage(ops: QueueOps, store: str, encoded: arrowcodec.Encoded,
           calls: list[Call]) -> Op[tuple[str, str | None]]:
    """Write one artifact ahead of its job: the Redis store stages the bytes (calls appended
    to ``calls``, sent with the add); a file store writes the file now. Returns the staging
    nonce and the file URL (None: Redis)."""
    nonce = os.urandom(9).hex()
    key = ops.keys.stage(nonce)
    url: str | None = None
    if store == REDIS_STORE:
        calls.append(Call.cmd("HSET", key, encoded.sha256, encoded.data))
    else:
        target = open_store(store)
        url = yield Offload(lambda: target.write(ops.name, encoded.sha256, encoded.data))
        calls.append(Call.cmd("HSET", key, f"x:{url}", encoded.sha256))
        calls.append(Call.cmd("HSET", ops.keys.meta, "xart", "1"))
    calls.append(Call.cmd("PEXPIRE", key, STAGE_TTL_MS))
    return nonce, url


def _send(ops: QueueOps, group: list[_Pending], store: str,
          name: str | None) -> Op[list[JobRecord]]:
    """Write the new artifacts of ``group`` and add its jobs (one add.lua call)."""
    if name is not None:  # which chunks have a job already: those are not written again
        found = yield Batch([Call.cmd("EXISTS", ops.keys.job(p.options["job_id"]))
                             for p in group])
        for p, there in zip(group, found):
            if int(there):
                p.encoded = None
    calls: list[Call] = []
    args: list[Any] = []
    records = []
    written: list[str] = []  # files of this group (a file store), deleted if it fails
    try:
        for p in group:
            nonce = None
            if p.encoded is not None:
                nonce, url = yield from _stage(ops, store, p.encoded, calls)
                if url is not None:
                    written.append(url)
                ref = ArtifactRef(p.encoded.sha256, p.encoded.kind, p.encoded.size,
                                  p.encoded.rows, url)
                p.data["payload"]["frame"] = ref.to_json()
            one, rec = ops.prepare(p.data, p.options)
            if nonce is not None:
                one[6] = _with_art(one[6], nonce)
            args += one
            records.append(rec)
    except Exception:
        if written:  # no job of this group was added: its files go
            yield Offload(functools.partial(delete_urls, written))
        raise
    return (yield from ops.add_records(args, records, calls))


def _groups(pendings: Iterable[_Pending]) -> Iterable[list[_Pending]]:
    group: list[_Pending] = []
    size, first = 0, True
    for p in pendings:
        group.append(p)
        size += p.encoded.size if p.encoded is not None else 0
        if first or size >= GROUP_BYTES or len(group) >= GROUP_CHUNKS:
            yield group
            group, size, first = [], 0, False
    if group:
        yield group


def add_frame_map(ops: QueueOps, store: str, df: Any, size: int, job_type: str,
                  options: Mapping[str, Any], name: str | None) -> Op[list[JobRecord]]:
    """The jobs of ``Queue.map(df, chunksize=size)``, added chunk by chunk (see module)."""
    slices = arrowcodec.frame_slices(df, size, "Queue.map's DataFrame")

    def pendings() -> Iterable[_Pending]:
        for k, (start, stop, enc) in enumerate(slices):
            data = {"type": job_type, "payload": {"chunk": k, "start": start, "stop": stop,
                                                  "rows": stop - start}}
            opts = dict(options)
            if name is not None:
                opts["job_id"] = chunk_id(name, k, enc.sha256)
            yield _Pending(data, opts, enc.sha256, enc)

    records: list[JobRecord] = []
    stream = iter(pendings())
    first = next(stream, None)  # a frame Arrow cannot store fails here: nothing written
    if first is None:
        return records
    for group in _groups(_chain(first, stream)):
        records += yield from _send(ops, group, store, name)
    if name is not None:
        yield from _remember(ops, name, records)
    return records


def _chain(first: _Pending, rest: Iterable[_Pending]) -> Iterable[_Pending]:
    yield first
    yield from rest


def add_named(ops: QueueOps, datas: Sequence[dict[str, Any]], options: Mapping[str, Any],
              name: str) -> Op[list[JobRecord]]:
    """``Queue.map(items, name=...)`` of JSON job data: ids from name, position and the
    hash of each job's data; existing jobs come back as they are."""
    import hashlib

    from .serialization import dumps

    items = []
    for k, d in enumerate(datas):
        sha = hashlib.sha256(dumps(d).encode("utf-8", "surrogatepass")).hexdigest()
        items.append((d, {**options, "job_id": chunk_id(name, k, sha)}))
    records = yield from ops.add_bulk(items)
    yield from _remember(ops, name, records)
    return records


def _remember(ops: QueueOps, name: str, records: Sequence[JobRecord]) -> Op[None]:
    """Keep the batch's ids (in order) under ``batch:<name>``; warn when the name held
    other jobs before (changed chunks got new jobs; the old ones remain)."""
    key = ops.keys.batch(name)
    ids = [r.id for r in records]
    tmp = ops.keys.batch(f"{name}~{os.urandom(6).hex()}")
    calls = [Call.cmd("LRANGE", key, 0, -1)]
    for i in range(0, len(ids), 1000):
        calls.append(Call.cmd("RPUSH", tmp, *ids[i:i + 1000]))
    if ids:
        calls.append(Call.cmd("RENAME", tmp, key))
    else:
        calls.append(Call.cmd("DEL", key))
    calls.append(Call.cmd("ZADD", ops.keys.batches, int(time.time() * 1000), name))
    replies = yield Batch(calls)
    before = list(replies[0])
    if before and before != ids:
        old = len(set(before) - set(ids))
        warnings.warn(
            f"batch {name!r} of queue {ops.name!r} was mapped before with other data: "
            f"{len(set(ids) - set(before))} chunk(s) changed and got new jobs; the "
            f"{old} job(s) of the old chunks remain (until retention, or remove them)",
            BatchReused, stacklevel=user_stacklevel())


def batch_ids(ops: QueueOps, name: str) -> Op[list[str]]:
    """The job ids of named batch ``name``, in input order; ``BatchNotFoundError``."""
    name = validate_batch_name(name)
    ids, known = yield Batch([Call.cmd("LRANGE", ops.keys.batch(name), 0, -1),
                              Call.cmd("ZREVRANGE", ops.keys.batches, 0, 19)])
    if not ids:
        listed = ", ".join(repr(n) for n in known) or "none"
        raise BatchNotFoundError(
            f"queue {ops.name!r} has no batch named {name!r} (made by Queue.map(..., "
            f"name=...)); its batches: {listed}")
    return list(ids)


# -- results and chunks ---------------------------------------------------------------------
def put_result(ops: QueueOps, store: str, job_id: str, value: Any) -> Op[dict[str, Any]]:
    """Store ``value`` (a DataFrame, Series or ndarray) as an artifact of job ``job_id``;
    returns the reference, the job's JSON result."""
    enc = arrowcodec.encode(value, "the processor's return value")
    url: str | None = None
    if store == REDIS_STORE:
        field, stored = enc.sha256, enc.data
    else:
        target = open_store(store)
        url = yield Offload(lambda: target.write(ops.name, enc.sha256, enc.data))
        field, stored = f"x:{url}", enc.sha256.encode()
    ok = yield ops.call("art_put", job_id, field, stored, "0" if url is None else "1")
    if not int(ok) and url is not None:  # the job is gone: so goes its file
        yield Offload(lambda: delete_urls([url]))
    return ArtifactRef(enc.sha256, enc.kind, enc.size, enc.rows, url, ops.name,
                       job_id).to_json()


def store_result(job: Any, value: Any) -> Any:
    """A processor's return value as the job stores it: a frame/Series/array becomes an
    artifact and its reference (blocking I/O: call it off an event loop)."""
    if arrowcodec.kind_of(value) is None:
        return value
    queue = job.queue
    connection = queue.connection
    return run_sync(connection.sync(), put_result(queue.ops, connection.store, job.id,
                                                  value))


def _art_key(keys: QueueKeys, job_id: str, ref: ArtifactRef) -> str:
    """Where ``ref`` (of the Redis store) is: its own job's hash when it names one (a
    result), else ``job_id``'s of ``keys``'s queue."""
    if ref.queue is not None and ref.job is not None:
        return QueueKeys(ref.queue, keys.prefix).art(ref.job)
    return keys.art(job_id)


def _load_calls(keys: QueueKeys, items: Sequence[tuple[str, ArtifactRef]]
                ) -> list[Call]:
    return [Call.raw_cmd("HGET", _art_key(keys, job_id, ref), ref.sha256)
            for job_id, ref in items if ref.url is None]


def resolve_many(keys: QueueKeys, items: Sequence[tuple[str, Any]],
                 return_exceptions: bool = False, defer: bool = False) -> Op[list[Any]]:
    """The values of (job id, stored value) pairs: references read (one round trip for the
    Redis store), checked against their hash and decoded; other values as they are. An
    artifact that is missing or changed raises ``ArtifactError`` (``return_exceptions``:
    the error takes the value's place). ``defer``: DataFrames stay
    ``arrowcodec.FrameTable`` (a batch joins them before converting)."""
    decode = arrowcodec.decode_deferred if defer else arrowcodec.decode
    refs = [(i, job_id, ref) for i, (job_id, v) in enumerate(items)
            if (ref := ArtifactRef.parse(v)) is not None]
    out = [v for _, v in items]
    if not refs:
        return out
    in_redis = [(job_id, ref) for _, job_id, ref in refs if ref.url is None]
    blobs = iter((yield Batch(_load_calls(keys, in_redis)))) if in_redis else iter(())
    for i, job_id, ref in refs:
        try:
            if ref.url is None:
                data = next(blobs)
            else:
                data = yield Offload(functools.partial(read_url, ref.url))
            out[i] = decode(check_bytes(data, ref, f"job {job_id} of queue {keys.name!r}"))
        except ArtifactError as exc:
            if not return_exceptions:
                raise
            out[i] = exc
    return out


def resolve(keys: QueueKeys, job_id: str, value: Any) -> Op[Any]:
    return (yield from resolve_many(keys, [(job_id, value)]))[0]


def chunk_ref(payload: Any) -> ArtifactRef | None:
    """The artifact reference of a ``Queue.map`` frame chunk's payload, else None."""
    return ArtifactRef.parse(payload.get("frame")) if isinstance(payload, Mapping) else None


def load_chunk(job: Any, ref: ArtifactRef) -> Any:
    """The DataFrame chunk ``ref`` of ``job`` (or of a bare payload, for a file store),
    read and checked against its hash (blocking)."""
    queue = getattr(job, "queue", None)
    if queue is None:
        if ref.url is None:
            raise TypeError("chunk_frame: this chunk lives in Redis beside its job; pass the "
                            "job itself, not its payload")
        return arrowcodec.decode(check_bytes(read_url(ref.url), ref, "chunk"))
    return run_sync(queue.connection.sync(),
                    resolve(queue.ops.keys, job.id, ref.to_json()))


# -- the sweep of fsspec artifact files ------------------------------------------------------
def sweep(keys: QueueKeys, limit: int = SWEEP_LIMIT) -> Op[int]:
    """Delete artifact files whose jobs are gone (listed in ``artgc`` by the scripts that
    deleted the jobs); returns how many. One SRANDMEMBER when there are none."""
    total = 0
    while True:
        urls = yield Call.cmd("SRANDMEMBER", keys.artgc, limit)
        if not urls:
            return total
        gone = yield Offload(functools.partial(delete_urls, urls))
        if not gone:
            return total
        yield Call.cmd("SREM", keys.artgc, *gone)
        total += len(gone)
        if len(urls) < limit:
            return total
