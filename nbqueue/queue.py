"""Queues: add jobs, read them, and control the queue. ``Queue`` is the blocking API.

Every method binds an operation of ``Queue.ops`` (``nbqueue.ops``), written once for this
API and ``nbqueue.aio``; architecture: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import html
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import redis

from . import otel, serialization
from .batch import (
    AUTO_SLOTS_IF_NONE,
    DEFAULT_DF_CHUNK,
    MAP_RETENTION,
    AsyncJobBatch,
    JobBatch,
    JobBatchBase,
    check_chunksize,
    is_frame,
    map_items,
)
from .connection import Connection, connect
from .dataplane import add_frame_map, add_named, batch_ids, validate_batch_name
from .display import queue_html, queue_text
from .durations import to_ms
from .errors import InvalidOptionError
from .job import AsyncJob, Job, JobBase
from .keys import DEFAULT_PREFIX
from .ops import QueueOps
from .options import RateLimit, validate_global_concurrency
from .protocol import Op, async_method, run_async, run_sync, sync_method
from .records import Event, JobRecord
from .types import JobState, JobStatus, QueueMetrics, WorkerInfo

if TYPE_CHECKING:
    import pandas as pd


J = TypeVar("J", bound=JobBase)
B = TypeVar("B", bound=JobBatchBase[Any])


class QueueBase(Generic[J, B]):
    """Everything a queue does, defined once; ``Queue`` and ``aio.Queue`` bind it to I/O.

    Generic in the job handle ``J`` and the batch ``B`` that its operations return."""

    job_class: type[J]
    batch_class: type[B]

    def __init__(self, name: str, connection: Connection | str | redis.Redis | None = None, *,
                 prefix: str = DEFAULT_PREFIX,
                 default_job_options: Mapping[str, Any] | None = None,
                 rate_limiter: Mapping[str, int] | None = None,
                 worker_concurrency: int | None = None,
                 max_payload_bytes: int = serialization.DEFAULT_HARD_LIMIT,
                 events_maxlen: int = 10_000,
                 global_concurrency: int | None = None) -> None:
        self._ops = QueueOps(name, prefix=prefix, default_job_options=default_job_options,
                             max_payload_bytes=max_payload_bytes, events_maxlen=events_maxlen)
        self.name = self._ops.name
        self.prefix = prefix
        self.rate_limiter = RateLimit.parse(rate_limiter)
        if worker_concurrency is not None and (
                isinstance(worker_concurrency, bool) or not isinstance(worker_concurrency, int)
                or worker_concurrency < 1):
            raise InvalidOptionError(f"worker_concurrency must be an int >= 1: "
                                     f"{worker_concurrency!r}")
        self.worker_concurrency = worker_concurrency or 1
        self.default_job_options = dict(default_job_options or {})
        self._connection: Any = connection
        # At most this many active jobs across all workers (None: no queue-wide limit).
        self.global_concurrency = (None if global_concurrency is None
                                   else validate_global_concurrency(global_concurrency))
        # The rate limit and the global concurrency live in Redis (shared by all workers);
        # written before the next op.
        self._config_pending = (self.rate_limiter is not None
                                or self.global_concurrency is not None)

    @property
    def ops(self) -> QueueOps:
        """This queue's operations as sans-I/O generators (``nbqueue.ops``): what its
        methods, its jobs' and its batches' run. ``queue._run(queue.ops.metrics())``."""
        return self._ops

    @property
    def connection(self) -> Connection:
        if not isinstance(self._connection, Connection):
            if hasattr(self._connection, "resolve"):  # the manager's lazy connection
                self._connection = self._connection.resolve()
            elif isinstance(self._connection, redis.Redis):
                self._connection = Connection.from_client(self._connection)
            else:
                self._connection = connect(self._connection)
        connection: Connection = self._connection
        if self._ops.min_replicas != connection.min_replicas:  # adds WAIT for replicas
            self._ops.min_replicas = connection.min_replicas
            self._ops.replica_timeout_ms = connection.replica_timeout_ms
        return connection

    def _with_config(self, op: Op[Any]) -> Op[Any]:
        if self._config_pending:
            if self.rate_limiter is not None:
                yield from self._ops.set_rate_limit(self.rate_limiter)
            if self.global_concurrency is not None:
                yield from self._ops.set_global_concurrency(self.global_concurrency)
            self._config_pending = False
        return (yield from op)

    def _run(self, op: Op[Any]) -> Any:
        """Run ``op`` (bound by the subclasses: blocking, or a coroutine for asyncio)."""
        raise NotImplementedError

    def _job(self, record: JobRecord) -> J:
        return self.job_class(self, record)

    # -- operations ---------------------------------------------------------------------
    @otel.sending
    def _add(self, /, data: Mapping[str, Any], **opts: Any) -> Op[J]:
        """Add one job; ``job_id`` of an existing job returns that job (idempotent).

        ``depends_on=[job | job_id | (queue_name, job_id), ...]`` holds the job in state
        ``waiting-children`` until every one of those jobs has ended;
        ``on_dependency_failure="fail"`` (default: the job fails with error type
        ``dependency_failed``) or ``"ignore"`` (it runs anyway). See ``nbqueue.flows``."""
        depends_on = opts.pop("depends_on", None)
        policy = opts.pop("on_dependency_failure", None)
        if depends_on is not None:
            from .flows import add_dependent

            return self._job((yield from add_dependent(self._ops, data, opts, depends_on,
                                                       policy or "fail")))
        if policy is not None:
            raise InvalidOptionError("on_dependency_failure applies with depends_on only")
        return self._job((yield from self._ops.add(data, opts)))

    @otel.sending
    def _add_bulk(self, /, jobs: Iterable[Any], **opts: Any) -> Op[B]:
        """Add many jobs in one round trip. Items: data dicts, or (data, options) pairs.

        Returns a ``JobBatch`` (a list of the jobs, with wait/results/... methods)."""
        items = [(j[0], {**opts, **j[1]}) if isinstance(j, tuple) else (j, opts) for j in jobs]
        return self.batch_class(self._job(r) for r in (yield from self._ops.add_bulk(items)))

    @otel.sending
    def _map(self, /, items: Any, *, chunksize: int | str | None = None,
             job_type: str | None = None, name: str | None = None,
             **job_options: Any) -> Op[B]:
        """Add one job per data dict, per ``chunksize`` dicts, or per ``chunksize`` rows of a
        DataFrame; returns their ``JobBatch``.

        A DataFrame's chunks travel as Arrow (``nbqueue.dataplane``): each chunk's bytes go
        to the connection's artifact store and its job holds a reference
        (``payload["frame"]``; ``chunk_frame(job)`` gives the chunk exactly). No size limit
        but the store's; chunks are written and their jobs added in order, so workers start
        on the first while the later ones are written; returns once all are written.
        Data dicts keep JSON payloads (``nbqueue.batch.map_items``).

        ``chunksize="auto"`` (a list of data dicts): chunks sized for the queue's live
        workers, about 4 jobs per worker slot and at most ~64 KiB of JSON per job
        (``nbqueue.batch.auto_chunksize``; 8 slots assumed while no worker is registered).
        The processor gets chunk jobs as with ``chunksize=N``; a DataFrame gets the
        default rows per job.

        ``name``: a named batch. Each job's id comes from the name, the chunk number and
        the chunk's content hash: mapping the same data under the same name again (this
        kernel or a new one) returns the same jobs and adds nothing, finished chunks are
        not run again; a chunk whose data changed gets a new job (the old job remains, a
        ``BatchReused`` warning says how many). ``get_batch(name)`` finds it from any
        process.

        Unless given (here or in the queue's ``default_job_options``), ``remove_on_complete``
        and ``remove_on_fail`` are ``{"age": 86400}``: the jobs are kept a day, so that the
        batch's results can be gathered whatever their number.

        Jobs go in bulk add calls of bounded size (one round trip each, see
        ``QueueOps.add_bulk``). Every item and option is checked before the first call, so
        bad input adds nothing; an empty input adds nothing and returns an empty batch."""
        for bad in ("job_id", "depends_on"):
            if job_options.get(bad) is not None:
                raise InvalidOptionError(f"Queue.map does not take {bad} (it applies to one "
                                         "job: use Queue.add)")
        if name is not None:
            name = validate_batch_name(name)
        for keep in ("remove_on_complete", "remove_on_fail"):
            # a map's results are gathered later: keep its jobs a day, whatever their number
            # (the queue's default keeps only the newest 1000), unless told otherwise
            if job_options.get(keep) is None and keep not in self.default_job_options:
                job_options[keep] = MAP_RETENTION
        if is_frame(items):
            checked = check_chunksize(chunksize)
            size = checked if isinstance(checked, int) else DEFAULT_DF_CHUNK
            if job_type is not None and not isinstance(job_type, str):
                raise InvalidOptionError(f"job_type must be a str: {job_type!r}")
            self._ops.prepare({"type": "check"}, job_options)  # bad options: nothing written
            store = self.connection.store
            records = yield from add_frame_map(self._ops, store, items, size,
                                               job_type or "dataframe_chunk", job_options, name)
        else:
            slots = AUTO_SLOTS_IF_NONE
            if chunksize == "auto":
                workers = yield from self._ops.get_workers()
                slots = sum(w.concurrency for w in workers) or AUTO_SLOTS_IF_NONE
            datas = map_items(items, chunksize, job_type, slots)
            if name is not None:
                records = yield from add_named(self._ops, datas, job_options, name)
            else:
                # add_bulk checks every item and option before its first call, then adds in
                # chunks (one round trip each) small enough not to keep Redis busy for long
                records = yield from self._ops.add_bulk([(d, job_options) for d in datas])
        batch = self.batch_class(self._job(r) for r in records)
        batch.name = name
        return batch

    def _get_batch(self, /, name: str) -> Op[B]:
        """The named batch ``name`` (made by ``map(..., name=name)``, in any process), its
        jobs in input order; a job gone since (retention, remove) is in it as a handle
        whose result raises ``JobNotFoundError``. An unknown name raises
        ``BatchNotFoundError`` listing the queue's batches."""
        ids = yield from batch_ids(self._ops, name)
        records = yield from self._ops.get_jobs_by_id(ids)
        batch = self.batch_class(
            self._job(r if r is not None else
                      JobRecord(i, "", {}, self._ops.defaults, JobState.UNKNOWN))
            for i, r in zip(ids, records))
        batch.name = name
        return batch

    def _get_job(self, /, job_id: str) -> Op[J | None]:
        record = yield from self._ops.get_job(job_id)
        return None if record is None else self._job(record)

    def _get_job_status(self, /, job_id: str) -> Op[JobStatus | None]:
        record = yield from self._ops.get_job(job_id)
        return None if record is None else record.to_status()

    def _get_jobs(self, /, states: Iterable[str] | str | None = None, start: int = 0,
                  limit: int = 100) -> Op[list[J]]:
        return [self._job(r) for r in (yield from self._ops.get_jobs(states, start, limit))]

    def _get_metrics(self, /) -> Op[QueueMetrics]:
        return (yield from self._ops.metrics())

    def _get_stats(self, /) -> Op[dict[str, float]]:
        return (yield from self._ops.stats())

    def _get_history(self, /, minutes: int = 60) -> Op[list[tuple[int, int, int]]]:
        return (yield from self._ops.history(minutes))

    def _pause(self, /) -> Op[None]:
        yield from self._ops.set_paused(True)

    def _resume(self, /) -> Op[None]:
        yield from self._ops.set_paused(False)

    def _is_paused(self, /) -> Op[bool]:
        return (yield from self._ops.is_paused())

    def _drain(self, /, delayed: bool = False) -> Op[int]:
        """Remove all waiting jobs (and delayed ones with ``delayed=True``)."""
        return (yield from self._ops.drain(delayed))

    def _clean(self, /, grace: Any = 0, limit: int = 0, state: str = "completed") -> Op[int]:
        """Remove up to ``limit`` (0 = all) jobs of ``state`` older than ``grace`` (ms)."""
        return (yield from self._ops.clean(to_ms(grace, "grace"), limit, state))

    def _retry_failed(self, /, limit: int = 0) -> Op[int]:
        return (yield from self._ops.retry_failed(limit))

    def _remove(self, /, job_id: str) -> Op[bool]:
        return (yield from self._ops.remove(job_id))

    def _cancel(self, /, job_id: str) -> Op[bool]:
        """Cancel a job. A waiting or delayed job ends ``failed`` (error type ``cancelled``)
        at once; an active one is stopped by its worker (asyncio: its task is cancelled;
        process mode: its child stops it or is replaced; thread mode: cooperatively, see
        ``job.cancelled``), then ends the same way. Not retried, not dead-lettered; event
        ``cancelled``. Returns True, or False for a job that had finished already (a
        no-op); an unknown id raises ``JobNotFoundError``."""
        return (yield from self._ops.cancel(job_id))

    def _get_job_logs(self, /, job_id: str, start: int = 0, end: int = -1) -> Op[list[str]]:
        """The job's log lines, oldest first (``job.log`` and the print/logging output its
        processor wrote); the newest 1000 lines are kept, and the log goes with the job."""
        return (yield from self._ops.get_logs(job_id, start, end))

    def _obliterate(self, /, force: bool = False) -> Op[int]:
        return (yield from self._ops.obliterate(force))

    # -- control (BullMQ parity) -----------------------------------------------------------
    def _promote(self, /, job_id: str) -> Op[None]:
        """Run delayed job ``job_id`` now: it joins its priority level as if added now.
        A job that is not delayed raises ``JobStateError``; a missing one JobNotFoundError."""
        yield from self._ops.promote(job_id)

    def _change_priority(self, /, job_id: str, priority: Any, lifo: bool = False) -> Op[None]:
        """Move waiting or delayed job ``job_id`` to another priority level (the back of
        it; ``lifo=True``: the front). Active or finished jobs raise ``JobStateError``."""
        yield from self._ops.change_priority(job_id, priority, lifo)

    def _update_data(self, /, job_id: str, data: Mapping[str, Any]) -> Op[None]:
        """Replace the data of job ``job_id`` (same rules and size limit as ``add``); a
        finished job raises ``JobStateError``."""
        yield from self._ops.update_data(job_id, data)

    def _get_deduplication_job_id(self, /, dedup_id: str) -> Op[str | None]:
        """The id of the job deduplication id ``dedup_id`` points to while it is in force
        (None: adding with it now adds a job)."""
        return (yield from self._ops.get_deduplication_job_id(dedup_id))

    def _set_global_concurrency(self, /, limit: int | None) -> Op[None]:
        """At most ``limit`` active jobs in this queue across all workers and machines
        (enforced by the fetch script); None removes the limit."""
        value = None if limit is None else validate_global_concurrency(limit)
        yield from self._ops.set_global_concurrency(value)
        self.global_concurrency = value

    def _get_global_concurrency(self, /) -> Op[int | None]:
        return (yield from self._ops.global_concurrency())

    def _get_workers(self, /) -> Op[list[WorkerInfo]]:
        """The workers serving this queue, from every process and host (the registry their
        heartbeats keep); a worker that stops heartbeating drops out after its ttl."""
        return (yield from self._ops.get_workers())

    def _read_events(self, /, last_id: str = "$", block: Any = None,
                     count: int = 500) -> Op[tuple[str, list[Event]]]:
        """Events after ``last_id`` ("0" = from the start of the capped stream)."""
        if last_id == "$":
            last_id = yield from self._ops.last_event_id()
        block_ms = None if block is None else to_ms(block, "block")
        return (yield from self._ops.read_events(last_id, block_ms, count))

    # -- display -------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def _repr_html_(self) -> str:
        return f"<div class='nbqueue-queue'>nbqueue queue <b>{html.escape(self.name)}</b></div>"

    def _display_workers(self) -> list[Any]:
        """Workers to show with this queue: the registry (every host) where the queue has
        ``get_workers``, else the workers this process's default manager started."""
        get_workers = getattr(self, "get_workers", None)
        if get_workers is not None:
            try:
                return list(get_workers())
            except Exception:
                pass
        # The default manager lives in the package facade, which imports this module: look it
        # up (display only), do not import it (tests/test_structure.py: no import cycles).
        manager = getattr(sys.modules.get(__package__ or "nbqueue"), "queue_manager", None)
        workers = manager.workers.values() if manager is not None else ()
        return [w for w in workers if getattr(w, "queue_name", None) == self.name]


class Queue(QueueBase[Job, JobBatch]):
    """A queue with blocking methods. ``nbqueue.aio.Queue`` has the same ones, awaitable."""

    job_class = Job
    batch_class = JobBatch

    def _run(self, op: Op[Any]) -> Any:
        return run_sync(self.connection.sync(), self._with_config(op))

    add = sync_method(QueueBase._add)
    add_bulk = sync_method(QueueBase._add_bulk)
    map = sync_method(QueueBase._map)
    get_batch = sync_method(QueueBase._get_batch)
    get_job = sync_method(QueueBase._get_job)
    get_job_status = sync_method(QueueBase._get_job_status)
    get_jobs = sync_method(QueueBase._get_jobs)
    get_metrics = sync_method(QueueBase._get_metrics)
    get_stats = sync_method(QueueBase._get_stats)
    get_history = sync_method(QueueBase._get_history)
    pause = sync_method(QueueBase._pause)
    resume = sync_method(QueueBase._resume)
    is_paused = sync_method(QueueBase._is_paused)
    drain = sync_method(QueueBase._drain)
    clean = sync_method(QueueBase._clean)
    retry_failed = sync_method(QueueBase._retry_failed)
    remove = sync_method(QueueBase._remove)
    obliterate = sync_method(QueueBase._obliterate)
    cancel = sync_method(QueueBase._cancel)
    get_job_logs = sync_method(QueueBase._get_job_logs)
    read_events = sync_method(QueueBase._read_events)
    promote = sync_method(QueueBase._promote)
    change_priority = sync_method(QueueBase._change_priority)
    update_data = sync_method(QueueBase._update_data)
    get_deduplication_job_id = sync_method(QueueBase._get_deduplication_job_id)
    set_global_concurrency = sync_method(QueueBase._set_global_concurrency)
    get_global_concurrency = sync_method(QueueBase._get_global_concurrency)
    get_workers = sync_method(QueueBase._get_workers)

    def _repr_html_(self) -> str:
        """Counts by state, paused, and workers (one round trip for the counts)."""
        try:
            return queue_html(self.get_metrics(), self._display_workers())
        except Exception as exc:  # Redis away: the name and why there is nothing more
            return (f"<div class='nbqueue-queue'><b>{html.escape(self.name)}</b>: "
                    f"{html.escape(str(exc))}</div>")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        try:
            p.text(queue_text(self.get_metrics(), self._display_workers()))
        except Exception as exc:
            p.text(f"Queue {self.name!r}: {exc}")

    def events(self, last_id: str = "$", block: Any = 1000) -> Iterable[Event]:
        """Iterate over events as they come (blocks; break out of the loop to stop)."""
        while True:
            last_id, batch = self.read_events(last_id, block)
            yield from batch

    def jobs_frame(self, states: Iterable[str] | str | None = None, limit: int = 100,
                   columns: str | Iterable[str] | None = None) -> pd.DataFrame:
        """Up to ``limit`` jobs in total (0: all; active, waiting, delayed first, then
        failed and completed, newest first) as a DataFrame: concise columns by default,
        ``columns="all"`` for every one (``nbqueue.frames``)."""
        from .frames import jobs_frame

        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionError(f"limit must be an int >= 0 (0: all): {limit!r}")
        jobs = self.get_jobs(states, 0, limit)
        return jobs_frame(jobs[:limit] if limit and limit > 0 else jobs,
                          columns if columns is None or isinstance(columns, str)
                          else list(columns))

    def metrics_history_frame(self, minutes: int = 60) -> pd.DataFrame:
        from .frames import history_frame

        return history_frame(self.name, self.get_history(minutes))


class AsyncQueue(QueueBase[AsyncJob, AsyncJobBatch]):
    """A queue with awaitable methods (``nbqueue.aio.Queue``; one client per event loop)."""

    job_class = AsyncJob
    batch_class = AsyncJobBatch
    _aclient: Any = None
    _aloop: asyncio.AbstractEventLoop | None = None

    async def _run(self, op: Op[Any]) -> Any:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:
            self._aclient = self.connection.new_async()
            self._aloop = loop
        return await run_async(self._aclient, self._with_config(op))

    async def close(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None

    add = async_method(QueueBase._add)
    add_bulk = async_method(QueueBase._add_bulk)
    map = async_method(QueueBase._map)
    get_batch = async_method(QueueBase._get_batch)
    get_job = async_method(QueueBase._get_job)
    get_job_status = async_method(QueueBase._get_job_status)
    get_jobs = async_method(QueueBase._get_jobs)
    get_metrics = async_method(QueueBase._get_metrics)
    get_stats = async_method(QueueBase._get_stats)
    get_history = async_method(QueueBase._get_history)
    pause = async_method(QueueBase._pause)
    resume = async_method(QueueBase._resume)
    is_paused = async_method(QueueBase._is_paused)
    drain = async_method(QueueBase._drain)
    clean = async_method(QueueBase._clean)
    retry_failed = async_method(QueueBase._retry_failed)
    remove = async_method(QueueBase._remove)
    obliterate = async_method(QueueBase._obliterate)
    cancel = async_method(QueueBase._cancel)
    get_job_logs = async_method(QueueBase._get_job_logs)
    read_events = async_method(QueueBase._read_events)
    promote = async_method(QueueBase._promote)
    change_priority = async_method(QueueBase._change_priority)
    update_data = async_method(QueueBase._update_data)
    get_deduplication_job_id = async_method(QueueBase._get_deduplication_job_id)
    set_global_concurrency = async_method(QueueBase._set_global_concurrency)
    get_global_concurrency = async_method(QueueBase._get_global_concurrency)
    get_workers = async_method(QueueBase._get_workers)

    async def events(self, last_id: str = "$", block: Any = 1000) -> AsyncIterator[Event]:
        """Iterate over events as they come."""
        while True:
            last_id, batch = await self.read_events(last_id, block)
            for event in batch:
                yield event

    async def jobs_frame(self, states: Iterable[str] | str | None = None, limit: int = 100,
                         columns: Any = None) -> pd.DataFrame:
        """As ``nbqueue.Queue.jobs_frame``: ``limit`` jobs in total, concise columns."""
        from .frames import jobs_frame

        jobs = await self.get_jobs(states, 0, limit)
        return jobs_frame(jobs[:limit] if limit and limit > 0 else jobs,
                          columns if columns is None or isinstance(columns, str)
                          else list(columns))

    async def metrics_history_frame(self, minutes: int = 60) -> pd.DataFrame:
        from .frames import history_frame

        return history_frame(self.name, await self.get_history(minutes))
