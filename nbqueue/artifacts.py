"""Artifact stores: where the Arrow bytes of map chunks and frame results live.

``connect(url, store=None)`` (else ``$NBQUEUE_STORE``, else ``"redis"``) picks one:

- ``"redis"`` (the default): the bytes live in Redis beside the queue, in the HASH
  ``<prefix>:{queue}:art:<job id>`` (field: the content hash). Same hash slot as the
  queue, so it works on every deployment, Redis Cluster included; the scripts that delete a
  job (retention, remove, clean, drain, obliterate) delete that key in the same call.
- any fsspec URL (``file:///shared/nbq``, ``s3://bucket/prefix``...): the bytes go to a
  file ``<root>/<queue>/<sha256>-<nonce>.arrow`` (one file per artifact, never shared by
  two jobs), written before the job is added. The job's ``art:<id>`` hash lists the file
  as field ``x:<url>``. When a script deletes the job it moves that URL to the queue's SET
  ``artgc``; the files listed there are deleted by whoever runs ``sweep`` next: the call
  that removed the jobs (``remove``, ``clean``, ``drain``, ``obliterate``) right after its
  script, and every worker's upkeep (jobs trimmed by retention as they finish).

Job data and results hold a reference, ``{"$nbqueue.artifact": {"sha256", "kind",
"size", "rows", "url"?}}``; every read checks the bytes against the hash
(:class:`~nbqueue.errors.ArtifactError` otherwise: a tampered artifact is never used).
This module does no Redis I/O (``nbqueue.dataplane`` has the operations).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import (
    ArtifactError,
    MissingDependencyError,
    MissingStoreBackendError,
    StoreError,
)

__all__ = ["ENV_STORE", "REDIS_STORE", "REF_KEY", "ArtifactRef", "FsspecStore",
           "check_bytes", "delete_urls", "open_store", "read_url", "resolve_store"]

REDIS_STORE = "redis"
ENV_STORE = "NBQUEUE_STORE"
REF_KEY = "$nbqueue.artifact"
#: fsspec protocols and the package (and nbqueue extra) that provides each.
BACKENDS: dict[str, tuple[str, str | None]] = {
    "s3": ("s3fs", "nbqueue[s3]"), "s3a": ("s3fs", "nbqueue[s3]"),
    "gs": ("gcsfs", None), "gcs": ("gcsfs", None),
    "az": ("adlfs", None), "abfs": ("adlfs", None), "abfss": ("adlfs", None),
}


@dataclass(frozen=True)
class ArtifactRef:
    """What a job holds instead of a frame: the content hash of its Arrow bytes, the kind
    of value, the byte size and row count, and the file URL (None: the Redis store, the
    bytes under the job's ``art:<id>`` hash)."""

    sha256: str
    kind: str
    size: int
    rows: int = 0
    url: str | None = None
    # a result's job (queue name and id): the reference then reads without its job at hand
    # (``job.dependency_results()`` of a fan-in gets its dependencies' references)
    queue: str | None = None
    job: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"sha256": self.sha256, "kind": self.kind, "size": self.size,
                                "rows": self.rows}
        if self.url is not None:
            body["url"] = self.url
        if self.queue is not None and self.job is not None:
            body["queue"], body["job"] = self.queue, self.job
        return {REF_KEY: body}

    @staticmethod
    def parse(value: Any) -> ArtifactRef | None:
        """The reference ``value`` is (job data payload entry, result), else None."""
        if type(value) is not dict or len(value) != 1 or REF_KEY not in value:
            return None
        body = value[REF_KEY]
        if not isinstance(body, Mapping) or not isinstance(body.get("sha256"), str):
            return None
        url, queue, job = body.get("url"), body.get("queue"), body.get("job")
        return ArtifactRef(str(body["sha256"]), str(body.get("kind", "DataFrame")),
                           int(body.get("size") or 0), int(body.get("rows") or 0),
                           str(url) if url else None,
                           str(queue) if queue else None, str(job) if job else None)


def resolve_store(store: str | None) -> str:
    """The store a connection uses: ``store``, else ``$NBQUEUE_STORE``, else ``"redis"``;
    an fsspec URL is checked (its backend installed, the location writable) once per
    process. Raises ``StoreError`` / ``MissingStoreBackendError``."""
    if store is None:
        store = os.environ.get(ENV_STORE) or REDIS_STORE
    if not isinstance(store, str):
        raise StoreError(f"store must be 'redis' or an fsspec URL (file:///path, "
                         f"s3://bucket/prefix), not {type(store).__name__}")
    text = store.strip()
    if text.lower() == REDIS_STORE:
        return REDIS_STORE
    if "://" not in text:
        raise StoreError(
            f"store {text!r} is neither 'redis' nor a URL: use 'redis' (the default) or an "
            "fsspec URL such as file:///shared/nbq or s3://bucket/prefix")
    open_store(text.rstrip("/"))
    return text.rstrip("/")


def _fsspec() -> Any:
    try:
        import fsspec
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("fsspec", "an fsspec artifact store") from exc
    return fsspec


def _filesystem(url: str) -> tuple[Any, str]:
    fsspec = _fsspec()
    protocol = url.split("://", 1)[0].lower()
    try:
        found: tuple[Any, str] = fsspec.core.url_to_fs(url)
        return found
    except ImportError as exc:
        package, extra = BACKENDS.get(protocol, (None, None))
        if package is None:
            words = str(exc).replace("Please install ", "").replace("Install ", "").split()
            package = words[0] if words else protocol
        raise MissingStoreBackendError(package, url, extra) from exc
    except ValueError as exc:  # unknown protocol
        raise StoreError(f"store {url!r}: {exc}; use 'redis' or an fsspec URL "
                         "(file:///path, s3://bucket/prefix)") from None


class FsspecStore:
    """An fsspec location that holds artifact files (``open_store`` makes and caches it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = _filesystem(url)
        self._dirs: set[str] = set()
        self._lock = threading.Lock()

    def _path_url(self, path: str) -> str:
        return str(self.fs.unstrip_protocol(path))

    def check(self) -> None:
        """Write and delete a probe file; ``StoreError`` naming the store if that fails."""
        probe = f"{self.root}/.nbqueue-probe-{os.urandom(6).hex()}"
        try:
            self._mkdir(self.root)
            self.fs.pipe_file(probe, b"nbqueue")
            self.fs.rm_file(probe)
        except Exception as exc:
            raise StoreError(
                f"the artifact store {self.url} is not writable ({type(exc).__name__}: "
                f"{exc}); give a location this process can write (connect(store=...) or "
                f"${ENV_STORE}), or store='redis'") from None

    def _mkdir(self, path: str) -> None:
        if path in self._dirs:
            return
        self.fs.makedirs(path, exist_ok=True)
        with self._lock:
            self._dirs.add(path)

    def write(self, queue: str, sha256: str, data: bytes) -> str:
        """Write one artifact file (a fresh name each time); returns its URL."""
        folder = f"{self.root}/{queue}"
        path = f"{folder}/{sha256}-{os.urandom(6).hex()}.arrow"
        try:
            self._mkdir(folder)
            self.fs.pipe_file(path, data)
        except Exception as exc:
            raise StoreError(f"could not write an artifact to the store {self.url} "
                             f"({type(exc).__name__}: {exc}); its job was not added") from None
        return self._path_url(path)


_STORES: dict[str, FsspecStore] = {}
_STORES_LOCK = threading.Lock()


def open_store(url: str) -> FsspecStore:
    """The store at ``url``, checked writable the first time this process opens it."""
    found = _STORES.get(url)
    if found is None:
        store = FsspecStore(url)
        store.check()
        with _STORES_LOCK:
            found = _STORES.setdefault(url, store)
    return found


def read_url(url: str) -> bytes:
    """The bytes of an artifact file; ``ArtifactError`` when it cannot be read."""
    fs, path = _filesystem(url)
    try:
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        raise ArtifactError(f"artifact {url} is missing (deleted with its job, or by "
                            "hand)") from None
    except Exception as exc:
        raise ArtifactError(f"artifact {url} could not be read ({type(exc).__name__}: "
                            f"{exc})") from None


def delete_urls(urls: Iterable[str]) -> list[str]:
    """Delete artifact files (a missing one counts as deleted); returns the URLs that are
    gone now. A file that could not be deleted stays listed for the next sweep."""
    gone = []
    for url in urls:
        try:
            fs, path = _filesystem(url)
            fs.rm_file(path)
        except FileNotFoundError:
            pass
        except Exception:
            continue
        gone.append(url)
    return gone


def check_bytes(data: bytes | None, ref: ArtifactRef, where: str) -> bytes:
    """``data`` if it is the artifact ``ref`` names (same SHA-256), else ``ArtifactError``."""
    from .arrowcodec import content_hash

    if data is None:
        raise ArtifactError(f"{where}: its artifact {ref.sha256[:16]}... is missing (the "
                            "job's artifacts were deleted, or never written)")
    actual = content_hash(data)
    if actual != ref.sha256:
        raise ArtifactError(
            f"{where}: its artifact does not match its content hash (expected "
            f"{ref.sha256[:16]}..., got {actual[:16]}... over {len(data)} bytes): it was "
            "changed after it was written, and is not used")
    return data
