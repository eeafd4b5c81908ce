"""The exceptions nbqueue raises; all derive from :class:`NbqueueError`."""

from __future__ import annotations

from redis.exceptions import OutOfMemoryError as _RedisOutOfMemoryError
from redis.exceptions import ResponseError as _RedisResponseError


class NbqueueError(Exception):
    """Base class of every error nbqueue raises on purpose."""


class InvalidOptionError(NbqueueError, ValueError):
    """An option (priority, delay, attempts, backoff, retention...) is invalid."""


class PayloadTooLargeError(NbqueueError, ValueError):
    """Job data is larger than the configured hard limit; nothing was written."""


class RedisUnavailableError(NbqueueError, ConnectionError):
    """Redis cannot be reached; the message names the URL (password masked)."""


class SentinelServiceError(RedisUnavailableError):
    """Sentinels answered but none knows the service named in a ``redis+sentinel://`` URL
    (a typo, or the wrong sentinels); the message lists the services they do know."""


class NotReplicatedError(NbqueueError):
    """An add on a connection with ``min_replicas=N`` was written on the primary but fewer
    than N replicas confirmed it within the timeout (``WAIT``).

    The jobs ARE stored on the primary (``job_ids`` lists them, in call order; the items
    of a bulk add after them were not sent): they will run unless the primary is lost
    before it replicates them. ``acked`` replicas confirmed, ``wanted`` were asked for.
    """

    def __init__(self, message: str, *, queue: str, job_ids: list[str], acked: int,
                 wanted: int) -> None:
        super().__init__(message)
        self.queue = queue
        self.job_ids = job_ids
        self.acked = acked
        self.wanted = wanted


class RedisOutOfMemoryError(NbqueueError, _RedisOutOfMemoryError):
    """Redis refused a write: its memory is full (``maxmemory`` under ``noeviction``).

    The message names the queue. Nothing of the refused call was written. Workers keep
    finishing, renewing locks and sweeping (those scripts may run on a full Redis), and
    retention frees memory as jobs finish; adds are refused until there is room again.
    Also a ``redis.exceptions.OutOfMemoryError`` (so a ``redis.RedisError``), for code that
    caught the raw error before.
    """

    def __init__(self, message: str, queue: str | None = None) -> None:
        super().__init__(message)
        self.queue = queue


class RedisBusyError(NbqueueError, _RedisResponseError):
    """Redis kept answering ``BUSY`` (another client's script or function ran past
    ``busy-reply-threshold``, 5 s by default) for longer than nbqueue retries a call
    (``protocol.BUSY_RETRY_S``, with back-off). Nothing of the refused call was written.
    Also a ``redis.ResponseError``, for code that caught the raw reply before."""


class EvictionPolicyError(NbqueueError, RuntimeError):
    """``connect()`` refused a Redis whose ``maxmemory-policy`` evicts any key
    (``allkeys-*``): it would silently delete queued jobs. The message names the setting and
    the opt-out (``connect(..., allow_eviction=True)`` or ``NBQUEUE_ALLOW_EVICTION=1``)."""


class NoServerError(NbqueueError, RuntimeError):
    """No embedded redis-server could be started (no binary, or it failed)."""


class UnknownQueueError(NbqueueError, KeyError):
    """A queue name that this manager does not know (or an invalid queue name)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "unknown queue"


class JobNotFoundError(NbqueueError, LookupError):
    """The job does not exist (never added, removed, or trimmed by retention)."""


class JobStateError(NbqueueError, ValueError):
    """The job is not in a state that allows the operation (promote a job that is not
    delayed, re-prioritise an active one, update the data of a finished one...)."""


class JobActiveError(JobStateError):
    """The job is active (locked by a worker): it cannot be removed now."""


class QueueBusyError(NbqueueError):
    """The queue has active jobs: ``obliterate()`` refuses without ``force=True``."""


class ResultTimeoutError(NbqueueError, TimeoutError):
    """Waiting for a job's (or a batch's) result took longer than the timeout given; the
    jobs keep running. Also a builtin ``TimeoutError``."""


class JobFailedError(NbqueueError):
    """Raised by ``job.result()`` when the job ended failed; carries the reason.

    ``remote_traceback`` is the traceback of the job's last failed attempt, as the worker
    recorded it (None if there was none, e.g. a stall); ``str(error)`` ends with it, so a
    notebook cell that raises this error shows where the processor failed."""

    def __init__(self, job_id: str, reason: str | None, error_type: str | None = None,
                 remote_traceback: str | None = None) -> None:
        message = f"job {job_id} failed: {reason}"
        if remote_traceback:
            message += ("\n\nThe processor's traceback, from the worker:\n"
                        + remote_traceback.rstrip("\n"))
        super().__init__(message)
        self.job_id = job_id
        self.reason = reason
        self.error_type = error_type
        self.remote_traceback = remote_traceback


class JobCancelledError(NbqueueError):
    """Raised inside a processor by ``job.raise_if_cancelled()`` once the job's cancel was
    requested (``job.cancel()``, ``Queue.cancel(id)``...); the attempt then ends failed with
    error type ``cancelled``, without retry."""


class UnrecoverableError(NbqueueError):
    """Raise inside a processor to fail the job at once, without further attempts."""


class JobTimeoutError(NbqueueError, TimeoutError):
    """A job attempt ran longer than its ``timeout`` option."""


class SignatureError(NbqueueError):
    """A code job's HMAC signature is missing or wrong; the job is never run."""


class CodeSignatureError(SignatureError, UnrecoverableError):
    """A code job whose signature is missing or wrong: failed at once, never run."""


NOTEBOOK_EXTRA = "nbqueue[notebook]"


class MissingDependencyError(NbqueueError, ImportError):
    """A feature of the notebook layer needs a package of the ``notebook`` extra
    (pandas, IPython, ipykernel, ipywidgets, anywidget, tabulate) that is not installed:
    ``pip install nbqueue`` is the core (queues, workers, CLI, metrics) only."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(f"{feature} needs {package}, which is not installed: "
                         f"pip install '{NOTEBOOK_EXTRA}' (the notebook layer)")
        self.package = package


class ArtifactError(NbqueueError):
    """An artifact (the Arrow bytes of a map chunk or of a frame result) is missing, or its
    bytes do not match the content hash its job holds (tampered with, truncated): it is
    never decoded or used. The message names the job and the reference."""


class StoreError(NbqueueError):
    """The artifact store cannot be used: not writable, unreachable, or not a store URL
    (``connect(store=...)`` / ``NBQUEUE_STORE``). The message names the store and the fix."""


class MissingStoreBackendError(MissingDependencyError):
    """An fsspec store URL whose backend package is not installed (``s3://`` needs s3fs):
    the message names the package and the extra that installs it."""

    def __init__(self, package: str, url: str, extra: str | None) -> None:
        how = f"pip install '{extra}' (or pip install {package})" if extra \
            else f"pip install {package}"
        ImportError.__init__(self, f"the artifact store {url} needs {package} (fsspec's "
                                   f"backend for it), which is not installed: {how}")
        self.package = package


class BatchNotFoundError(NbqueueError, LookupError):
    """``get_batch(name)`` of a name no ``Queue.map(..., name=...)`` of this queue made
    (or whose queue was obliterated since); the message lists the names it knows."""


class IncompleteResultsWarning(UserWarning):
    """``results_frame(errors="warn")`` (the default): some jobs of the batch failed or are
    gone, so the frame leaves them out (concatenated results) or has them as rows with
    their error (one row per job); the warning names them."""
