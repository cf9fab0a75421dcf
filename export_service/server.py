"""The ExportService servicer: translates proto ↔ store records (domain errors become status
codes in videojob.grpc_errors).

Every answer is read from the store, the one record of each job; what no owner can write (an
active job nobody drives now) is derived as it is read (awaiting_owner, from this replica's
roster of heartbeats: export_service.ownership.owner_gone), never stored; so is a waiting job's
place in its render service's line (queue_position, estimated_start_at:
export_service.queue_line)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from export_service.changes import ChangeHub, ListChanges
from export_service.config import ExportConfig
from export_service.input_check import check_inputs, has_input_files
from export_service.job_metrics import JobMetrics
from export_service.job_proto import (
    STATUS_FROM_PROTO,
    delivery_to_proto,
    history_entry_to_proto,
    job_to_proto,
)
from export_service.lifecycle import RetentionSweeper, delete_job
from export_service.operations import (
    OPERATIONS_SERVICE_NAME,
    OperationsServicer,
    add_operations_servicer,
    job_to_operation,
)
from export_service.orphan_sweep import OrphanSweeper
from export_service.ownership import Ownership
from export_service.queue_line import QueueLines
from export_service.render_health import RenderHealthReporter, render_health_name
from export_service.render_pool import RenderPool
from export_service.split_plan import (
    check_split_request,
    facts_from_spec,
    refuse_internal_kinds,
    source_facts,
)
from export_service.store import (
    Job,
    JobNotFound,
    JobStatus,
    JobStore,
    ListCursor,
    TransitionRejected,
)
from export_service.store.base import (
    created_at_us,
    decode_cursor,
    encode_cursor,
)
from export_service.store.outage import PatientStore
from export_service.stored_outputs import Outputs
from export_service.tracking.supervisor import RenderSupervisor
from export_service.webhooks.deliverer import Deliverer
from export_service.webhooks.destination import Resolver, SystemResolver
from export_service.webhooks.endpoints import caller_target, operator_targets
from videojob import metrics, stamps, tracing
from videojob.endpoints import IDEMPOTENT_REPLAYED_METADATA
from videojob.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MalformedArgument,
    Reason,
)
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import (
    GracefulHealth,
    add_health_and_reflection,
    bind,
)
from videojob.grpc_setup import create_server as create_grpc_server
from videojob.limits import (
    DEFAULT_PAGE_SIZE,
    MAX_JOB_ID_LENGTH,
    MAX_PAGE_SIZE,
    MAX_REQUEST_ID_LENGTH,
    MAX_WATCH_IDS,
)
from videojob.spec_validation import check_pixel_rate, normalize_spec
from videojob.storage.health import FollowedStore, follow_stores
from videojob.storage.location import S3Location
from videojob.storage.settings import StoreSettings

if TYPE_CHECKING:
    from export_service.store.notifications import ChangeFeed
    from videojob.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

SERVICE_NAME = export_pb2.DESCRIPTOR.services_by_name["ExportService"].full_name
# What each replica serves (health and reflection name each).
SERVED_NAMES = (SERVICE_NAME, OPERATIONS_SERVICE_NAME)
# SERVING while the object store of the render services' outputs answers (an s3://
# --render-output-dir); like ``<service>/render``, it never changes the health of "".
STORE_HEALTH_NAME = f"{SERVICE_NAME}/store"
# WatchExports waits this long after a change notification before re-reading the store, so a
# burst of changes costs one read.
LIST_WATCH_COALESCE_SECONDS = 0.05


def _check_job_id(job_id: str) -> None:
    if not job_id:
        raise InvalidArgument("id", "is required")
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise InvalidArgument("id", f"must be at most {MAX_JOB_ID_LENGTH} characters")


class ExportServicer(export_pb2_grpc.ExportServiceServicer):
    def __init__(
        self,
        store: JobStore,
        hub: ChangeHub,
        supervisor: RenderSupervisor,
        config: ExportConfig,
        render_pool: RenderPool | None = None,
        resolver: Resolver | None = None,
        deliveries_due: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        # Checks a webhook endpoint's name at create (export_service.webhooks.destination).
        self._resolver = resolver or SystemResolver()
        # Wakes this replica's deliverer (a create may owe an event at once).
        self._deliveries_due = deliveries_due
        self._hub = hub
        self._supervisor = supervisor
        self._config = config
        # A pool of render services: any usable one answers CheckInputs for CreateExport.
        # None: inputs are checked by the render alone.
        self._render_pool = render_pool
        self._queue_lines = QueueLines(
            store, render_pool.slots_of if render_pool is not None else lambda _id, _addr: None
        )

    async def _shown(self, job: Job) -> export_pb2.VideoJob:
        """The job as this replica answers for it: the record, whether nobody drives it, and
        where it waits for a render slot."""
        return (await self._shown_all([job]))[0]

    async def _shown_all(self, jobs: list[Job]) -> list[export_pb2.VideoJob]:
        places = await self._queue_lines.places(jobs)
        return [
            job_to_proto(
                job, awaiting_owner=self._awaiting_owner(job), queue_place=places.get(job.id)
            )
            for job in jobs
        ]

    def _awaiting_owner(self, job: Job) -> bool:
        ownership = self._supervisor.ownership
        return ownership is not None and ownership.owner_gone(job)

    async def CreateExport(
        self,
        request: export_pb2.CreateExportRequest,
        context: grpc.aio.ServicerContext[export_pb2.CreateExportRequest, export_pb2.VideoJob],
    ) -> export_pb2.VideoJob:
        job, replayed = await self._create(request)
        if replayed:
            context.set_trailing_metadata(((IDEMPOTENT_REPLAYED_METADATA, "true"),))
        return job

    async def StartExport(
        self,
        request: export_pb2.CreateExportRequest,
        context: grpc.aio.ServicerContext[export_pb2.CreateExportRequest, Any],
    ) -> Any:
        """CreateExport, answered as the job's google.longrunning.Operation."""
        job, replayed = await self._create(request)
        if replayed:
            context.set_trailing_metadata(((IDEMPOTENT_REPLAYED_METADATA, "true"),))
        return job_to_operation(job)

    async def _create(
        self, request: export_pb2.CreateExportRequest
    ) -> tuple[export_pb2.VideoJob, bool]:
        """Idempotent on request_id: a known one returns its job as it is now (never a second
        render) and True (a replay); reusing it with a different spec is ALREADY_EXISTS; the
        request id of a deleted job is FAILED_PRECONDITION (REQUEST_ID_DELETED); an empty one is
        replaced by a generated id, so every such call creates a job. A new job's input files
        are checked first by a render service (when one answers in time)."""
        if len(request.request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument(
                "request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters"
            )
        if not request.HasField("spec"):
            raise InvalidArgument("spec", "is required")
        refuse_internal_kinds(request.spec)
        normalized = normalize_spec(request.spec)
        check_pixel_rate(normalized, self._config.max_pixel_rate)
        check_split_request(normalized, self._config.split, facts_from_spec(normalized))
        spec = normalized.SerializeToString(deterministic=True)
        job_id = uuid.uuid4().hex
        request_id = request.request_id or f"generated-{job_id}"
        # Looked up first only to spare a known request the input check; the create looks it
        # up again in its own transaction.
        known = (
            await self._store.find_by_request_id(request_id)
            if request.request_id and has_input_files(normalized)
            else None
        )
        caller = await caller_target(request, self._config.webhooks, self._resolver)
        webhooks = (
            *(() if caller is None else (caller,)),
            *operator_targets(self._config.webhooks),
        )
        if known is None:
            if self._render_pool is not None:
                answer = await check_inputs(self._render_pool.any_usable().stub, normalized)
                if answer is not None:
                    facts = source_facts(normalized, answer)
                    check_split_request(normalized, self._config.split, facts)
            job, created = await self._store.create(
                job_id=job_id,
                request_id=request_id,
                spec=spec,
                max_active=self._config.max_active_jobs,
                owner=self._supervisor.owner,
                trace_context=tracing.inject_context() if tracing.tracing_enabled() else "",
                placement=self._supervisor.first_placement(job_id),
                webhooks=webhooks,
            )
        else:
            job, created = known, False
        if created:
            metrics.JOBS_CREATED.inc()
            tracing.annotate_current_span(job_id=job.id)
            logger.info("job %s created (request %s)", job.id, request_id, extra={"job_id": job.id})
            self._supervisor.track_created(job)
        elif job.spec != spec:
            raise AlreadyExists(
                f"request_id: {request_id!r} was already used for job {job.id} "
                "with a different spec",
                reason=Reason.REQUEST_ID_REUSED,
                metadata={"request_id": request_id, "job_id": job.id},
            )
        elif not job.terminal:
            # A retried create whose first commit was never acknowledged (the database dropped
            # the connection) finds its job here: make sure it is driven (a no-op if it is, or
            # if another replica created and owns it).
            self._supervisor.track_created(job, found_again=True)
        shown = await self._shown(job)
        if created and caller is not None:
            # The one answer that carries the endpoint's secret (the job's record keeps it for
            # signing; no read shows it).
            shown.notify_secret = caller.secret
        if created and webhooks:
            self._deliveries_due()
        return shown, not created

    async def GetExport(
        self,
        request: export_pb2.GetExportRequest,
        context: grpc.aio.ServicerContext[export_pb2.GetExportRequest, export_pb2.VideoJob],
    ) -> export_pb2.VideoJob:
        _check_job_id(request.id)
        return await self.get_job(request.id)

    # The calls below serve ExportService and google.longrunning.Operations alike
    # (export_service.operations); the caller has checked the job id.

    async def get_job(self, job_id: str) -> export_pb2.VideoJob:
        return await self._shown(await self._store.get(job_id))

    async def ListExports(
        self,
        request: export_pb2.ListExportsRequest,
        context: grpc.aio.ServicerContext[
            export_pb2.ListExportsRequest, export_pb2.ListExportsResponse
        ],
    ) -> export_pb2.ListExportsResponse:
        status: JobStatus | None = None
        if request.status != export_pb2.JOB_STATUS_UNSPECIFIED:
            if request.status not in STATUS_FROM_PROTO:
                raise InvalidArgument("status", f"unknown status {request.status}")
            status = STATUS_FROM_PROTO[request.status]
        return await self.list_jobs(request.page_size, request.page_token, status=status)

    async def list_jobs(
        self,
        page_size: int,
        page_token: str,
        *,
        status: JobStatus | None = None,
        done: bool | None = None,
    ) -> export_pb2.ListExportsResponse:
        """A page of jobs, newest first (of ``status``, or only terminal or only active ones
        by ``done``, when given)."""
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after: ListCursor | None = None
        if page_token:
            try:
                after = decode_cursor(page_token)
            except ValueError:
                raise MalformedArgument(
                    "page_token", "is not a token this service issued"
                ) from None
        jobs = await self._store.list_jobs(
            limit=page_size + 1, status=status, after=after, done=done
        )
        response = export_pb2.ListExportsResponse(jobs=await self._shown_all(jobs[:page_size]))
        if len(jobs) > page_size:
            last = jobs[page_size - 1]
            response.next_page_token = encode_cursor(ListCursor(created_at_us(last), last.id))
        return response

    async def CancelExport(
        self,
        request: export_pb2.CancelExportRequest,
        context: grpc.aio.ServicerContext[export_pb2.CancelExportRequest, export_pb2.VideoJob],
    ) -> export_pb2.VideoJob:
        _check_job_id(request.id)
        return await self.cancel_job(request.id)

    async def cancel_job(self, job_id: str) -> export_pb2.VideoJob:
        try:
            job = await self._store.cancel(job_id)
        except TransitionRejected as rejected:
            if rejected.current.status is JobStatus.CANCELLED:
                return job_to_proto(rejected.current)  # cancelled already: the same answer
            status = rejected.current.status.value
            raise FailedPrecondition(
                f"job {job_id} is {status}; only QUEUED or RUNNING jobs can be cancelled",
                reason=Reason.JOB_FINISHED,
                metadata={"job_id": job_id, "status": status},
            ) from None
        logger.info("job %s cancelled", job_id)
        await self._supervisor.job_cancelled(job)
        return job_to_proto(job)

    async def DeleteExport(
        self,
        request: export_pb2.DeleteExportRequest,
        context: grpc.aio.ServicerContext[
            export_pb2.DeleteExportRequest, export_pb2.DeleteExportResponse
        ],
    ) -> export_pb2.DeleteExportResponse:
        _check_job_id(request.id)
        await self.delete_job(request.id)
        return export_pb2.DeleteExportResponse()

    async def delete_job(self, job_id: str) -> None:
        try:
            await delete_job(self._store, job_id, self._supervisor.outputs)
        except TransitionRejected as rejected:
            current = rejected.current
            why = "its render's clean-up is pending" if current.terminal else "it is not finished"
            raise FailedPrecondition(
                f"job {job_id} is {current.status.value} and cannot be deleted: {why}; "
                "only finished jobs can be deleted",
                reason=Reason.JOB_ACTIVE,
                metadata={"job_id": job_id, "status": current.status.value},
            ) from None

    async def ListJobDeliveries(
        self,
        request: export_pb2.ListJobDeliveriesRequest,
        context: grpc.aio.ServicerContext[
            export_pb2.ListJobDeliveriesRequest, export_pb2.ListJobDeliveriesResponse
        ],
    ) -> export_pb2.ListJobDeliveriesResponse:
        _check_job_id(request.id)
        deliveries = await self._store.list_deliveries(request.id)
        return export_pb2.ListJobDeliveriesResponse(
            deliveries=[delivery_to_proto(delivery) for delivery in deliveries]
        )

    async def ListJobHistory(
        self,
        request: export_pb2.ListJobHistoryRequest,
        context: grpc.aio.ServicerContext[
            export_pb2.ListJobHistoryRequest, export_pb2.ListJobHistoryResponse
        ],
    ) -> export_pb2.ListJobHistoryResponse:
        return await self._history(request)

    async def _history(
        self, request: export_pb2.ListJobHistoryRequest
    ) -> export_pb2.ListJobHistoryResponse:
        """A page of the job's history. Its own call rather than a field of VideoJob: the
        history grows with every progress write, and VideoJob is what every Get, List and
        Watch sends."""
        _check_job_id(request.id)
        if request.after_version < 0:
            raise InvalidArgument("after_version", "must not be negative")
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        entries = await self._store.history(
            request.id, after_version=request.after_version, limit=page_size + 1
        )
        response = export_pb2.ListJobHistoryResponse(
            entries=[history_entry_to_proto(entry) for entry in entries[:page_size]]
        )
        if len(entries) > page_size:
            response.next_after_version = entries[page_size - 1].version
        return response

    async def WatchExport(
        self,
        request: export_pb2.WatchExportRequest,
        context: grpc.aio.ServicerContext[export_pb2.WatchExportRequest, export_pb2.VideoJob],
    ) -> AsyncIterator[export_pb2.VideoJob]:
        _check_job_id(request.id)
        if request.after_version < 0:
            raise InvalidArgument("after_version", "must not be negative")
        async for job in self.watch_job(request.id, request.after_version, "job"):
            yield job

    async def watch_job(
        self, job_id: str, after_version: int, watcher_kind: str
    ) -> AsyncIterator[export_pb2.VideoJob]:
        """The job as it is if newer than ``after_version``, then as it changes, until it is
        terminal (or the server stops), woken by the change hub; counted in the watchers
        gauge as ``watcher_kind``."""
        watchers = metrics.EXPORT_WATCHERS.labels(watcher_kind)
        watchers.inc()
        try:
            with self._hub.subscribe(job_id) as changed:
                async for job in self._watch(job_id, after_version, changed):
                    yield job
        finally:
            watchers.dec()

    async def _watch(
        self, job_id: str, after_version: int, changed: asyncio.Event
    ) -> AsyncIterator[export_pb2.VideoJob]:
        """The current state if newer than ``after_version``, then each change it can see,
        until a terminal state. After a change this process committed, the row its commit
        returned (ChangeHub.committed); else the store, read again. Skipped versions are fine,
        the terminal one is never missed (it is the last)."""
        sent = after_version
        woken = False
        while True:
            changed.clear()
            job = self._hub.committed(job_id, sent) if woken else None
            if job is None:
                job = await self._store.get(job_id)
            stamps.stamp("export.watch_read", job_id, job.version)
            self._hub.saw(job_id, job.version)
            if job.version > sent:
                yield await self._shown(job)
                sent = job.version
            if job.terminal or self._hub.closed:
                return
            woken = False
            # asyncio.timeout, not wait_for: no task per wait, so a wake-up is one loop turn.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._own_poll_interval()):
                    woken = await changed.wait()

    async def WatchExports(
        self,
        request: export_pb2.WatchExportsRequest,
        context: grpc.aio.ServicerContext[export_pb2.WatchExportsRequest, export_pb2.VideoJob],
    ) -> AsyncIterator[export_pb2.VideoJob]:
        ids, page_size, status = _watch_list_request(request)
        watchers = metrics.EXPORT_WATCHERS.labels("list")
        watchers.inc()
        try:
            with self._hub.subscribe_all() as changes:
                async for job in self._watch_list(ids, page_size, status, changes):
                    yield job
        finally:
            watchers.dec()

    async def _watch_list(
        self,
        ids: frozenset[str],
        page_size: int,
        status: JobStatus | None,
        changes: ListChanges,
    ) -> AsyncIterator[export_pb2.VideoJob]:
        """Reads the covered jobs (the first page of the list, the ids asked for, and every job
        sent until it is terminal) at the start, when the hub says hints may have been lost and
        at least every watch_poll_interval; between those, only the jobs the hub says changed
        (at most once per coalescing window), from the row this process committed where it has
        one. Sends each job whose version is newer than the one it last sent, or whose derived
        awaiting_owner changed (the same version again: nothing was written, what it shows did
        change)."""
        view = _ListView(ids, page_size, status)
        while True:
            everything, changed = changes.take()
            if everything:
                page = (
                    await self._store.list_jobs(limit=page_size, status=status) if page_size else []
                )
                view.new_page(page)
                jobs = [*page, *await self._read_jobs(view.covered() - {job.id for job in page})]
            else:
                jobs = await self._changed_jobs(changed, view)
            news: list[tuple[Job, bool]] = []
            for job in jobs:
                awaiting = self._awaiting_owner(job)
                if view.send(job, awaiting):
                    news.append((job, awaiting))
            places = await self._queue_lines.places(job for job, _ in news)
            for job, awaiting in news:
                yield job_to_proto(job, awaiting_owner=awaiting, queue_place=places.get(job.id))
            if self._hub.closed:
                return
            try:
                async with asyncio.timeout(self._own_poll_interval()):
                    await changes.event.wait()
            except TimeoutError:
                changes.note_everything()
            else:
                # Let a burst of changes (progress of many jobs) land before reading.
                await asyncio.sleep(LIST_WATCH_COALESCE_SECONDS)

    async def _changed_jobs(self, changed: dict[str, Job | None], view: _ListView) -> list[Job]:
        """The changed jobs the view covers (or that may enter its page), as committed here or
        read; a job deleted meanwhile leaves the view."""
        rows = [row for row in changed.values() if row is not None and view.may_cover(row)]
        unread = [job_id for job_id, row in changed.items() if row is None]
        read = await self._read_jobs(unread)
        for job_id in set(unread) - {job.id for job in read}:
            view.forget(job_id)
        return [*rows, *(job for job in read if view.may_cover(job))]

    async def _read_jobs(self, job_ids: Iterable[str]) -> list[Job]:
        found = await asyncio.gather(*(self._find(job_id) for job_id in job_ids))
        return [job for job in found if job is not None]

    def _own_poll_interval(self) -> float | None:
        """How long a watcher waits for a change before re-reading on its own: not at all when
        the hub's batched poll covers it (PostgreSQL), else watch_poll_interval."""
        return None if self._hub.polled else self._config.watch_poll_interval

    async def _find(self, job_id: str) -> Job | None:
        try:
            return await self._store.get(job_id)
        except JobNotFound:
            return None


class _ListView:
    """What one WatchExports stream covers: the ids it asked for, the first ``page_size`` jobs
    of the list (newest first, of ``status`` when given), and every job it sent until that one
    is terminal; and what it last sent of each."""

    def __init__(self, ids: frozenset[str], page_size: int, status: JobStatus | None) -> None:
        self._ids = ids
        self._page_size = page_size
        self._status = status
        self._page: list[tuple[int, str]] = []  # (created_at µs, id), newest first
        self._following: set[str] = set()
        self._sent: dict[str, tuple[int, bool]] = {}

    def new_page(self, page: list[Job]) -> None:
        """The page as just listed: what was sent of jobs no longer covered is forgotten."""
        self._page = [(created_at_us(job), job.id) for job in page]
        covered = self.covered() | {job.id for job in page}
        self._sent = {job_id: sent for job_id, sent in self._sent.items() if job_id in covered}

    def covered(self) -> set[str]:
        return {*self._ids, *self._following, *(job_id for _, job_id in self._page)}

    def may_cover(self, job: Job) -> bool:
        """Covered, or entering the page (a new job, or one that now has the status)."""
        if job.id in self._ids or job.id in self._following:
            return True
        if not self._page_size or (self._status is not None and job.status is not self._status):
            return job.id in {job_id for _, job_id in self._page}
        key = (created_at_us(job), job.id)
        if key in self._page:
            return True
        if len(self._page) >= self._page_size and key < self._page[-1]:
            return False
        self._page = sorted([*self._page, key], reverse=True)[: self._page_size]
        return True

    def send(self, job: Job, awaiting_owner: bool) -> bool:
        """Whether ``job`` is news to this stream (then it counts as sent)."""
        version, was_awaiting = self._sent.get(job.id, (0, False))
        if job.terminal:
            self._following.discard(job.id)
        else:
            self._following.add(job.id)
        if job.version > version or (job.version == version and awaiting_owner != was_awaiting):
            self._sent[job.id] = (job.version, awaiting_owner)
            return True
        return False

    def forget(self, job_id: str) -> None:
        self._following.discard(job_id)
        self._sent.pop(job_id, None)
        self._page = [entry for entry in self._page if entry[1] != job_id]


def _watch_list_request(
    request: export_pb2.WatchExportsRequest,
) -> tuple[frozenset[str], int, JobStatus | None]:
    if len(request.ids) > MAX_WATCH_IDS:
        raise InvalidArgument("ids", f"must hold at most {MAX_WATCH_IDS} job ids")
    for job_id in request.ids:
        if not job_id or len(job_id) > MAX_JOB_ID_LENGTH:
            raise InvalidArgument("ids", f"each id must be 1 to {MAX_JOB_ID_LENGTH} characters")
    if request.page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if request.page_size == 0 and not request.ids:
        raise InvalidArgument("page_size", "must be positive when no ids are given")
    status: JobStatus | None = None
    if request.status != export_pb2.JOB_STATUS_UNSPECIFIED:
        if request.status not in STATUS_FROM_PROTO:
            raise InvalidArgument("status", f"unknown status {request.status}")
        status = STATUS_FROM_PROTO[request.status]
    return frozenset(request.ids), min(request.page_size, MAX_PAGE_SIZE), status


@dataclass
class ExportServer:
    server: grpc.aio.Server
    port: int
    store: JobStore
    supervisor: RenderSupervisor
    health: GracefulHealth
    render_pool: RenderPool
    hub: ChangeHub
    render_health: RenderHealthReporter | None = None
    job_metrics: JobMetrics | None = None
    # Other processes' changes (PostgreSQL); None on SQLite.
    changes: ChangeFeed | None = None
    # Deletes finished jobs after --job-retention; None when jobs are kept.
    retention: RetentionSweeper | None = None
    # Removes objects and unfinished uploads no record claims; None without a store (or off).
    orphan_sweep: OrphanSweeper | None = None
    # Sends the webhook deliveries the outbox owes (any replica's).
    deliverer: Deliverer | None = None
    # What the server holds open besides itself (the object store's connections).
    resources: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    # Keeps STORE_HEALTH_NAME following the outputs' object store; None without one.
    store_follower: asyncio.Task[None] | None = None
    stopped: bool = False

    async def stop(self, grace: float | None) -> None:
        """NOT_SERVING, trackers stopped (renders untouched, jobs left for the next start),
        watch streams ended (clients resume with after_version), then the server with
        ``grace``. Once; later calls return at once."""
        if self.stopped:
            return
        self.stopped = True
        await self.health.enter_graceful_shutdown()
        if self.render_health is not None:
            await self.render_health.stop()
        if self.store_follower is not None:
            self.store_follower.cancel()
            await asyncio.wait({self.store_follower})
        await self.supervisor.stop()
        if self.retention is not None:
            await self.retention.stop()
        if self.orphan_sweep is not None:
            await self.orphan_sweep.stop()
        self.hub.close()
        if self.changes is not None:
            await self.changes.close()
        await self.server.stop(grace)
        if self.deliverer is not None:
            await self.deliverer.stop()
        await self.render_pool.close()
        await self.store.close()
        await self.resources.aclose()
        if self.job_metrics is not None:
            self.job_metrics.close()


def _report_database_health(health: GracefulHealth) -> Callable[[bool], None]:
    """An availability listener: the server (and ExportService) NOT_SERVING while the job
    database is unreachable, SERVING again when it answers (ignored once shutting down)."""
    pending: set[asyncio.Task[None]] = set()

    def changed(available: bool) -> None:
        metrics.STORE_AVAILABLE.set(1 if available else 0)
        if not isinstance(health, health_aio.HealthServicer):
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if available
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVED_NAMES):
            task = asyncio.create_task(health.set(name, status))
            pending.add(task)
            task.add_done_callback(pending.discard)

    return changed


async def _start_change_feed(
    config: ExportConfig, store: JobStore, hub: ChangeHub
) -> ChangeFeed | None:
    """On PostgreSQL other processes write too: their changes reach this one's watchers by
    LISTEN/NOTIFY (unless turned off) and a batched poll. SQLite has one writer per file."""
    if store.exclusive:
        return None
    # asyncpg: only on PostgreSQL.
    from export_service.store.notifications import ChangeFeed
    from export_service.store.postgres import PostgresJobStore

    assert isinstance(store, PostgresJobStore), store
    feed = ChangeFeed(
        store,
        hub,
        listen=config.change_notifications,
        poll_interval=config.change_poll_interval,
        list_poll_interval=config.watch_poll_interval,
    )
    await feed.start()
    hub.polled = True
    return feed


async def open_object_store(
    config: ExportConfig, resources: contextlib.AsyncExitStack
) -> ObjectStore | None:
    """The object store of the render services' outputs and of the media root, when either is
    an s3:// location, checked first (ObjectStoreMisconfigured or ObjectStoreUnavailable, one
    line naming the flag or variable, when it cannot be used); None when neither is."""
    if config.output_store is None and config.media_store is None:
        return None
    settings = config.store_settings or StoreSettings.from_environ()
    from videojob.storage.object_store import ObjectStore  # aiobotocore: only when used

    store = await resources.enter_async_context(ObjectStore(settings))
    if config.output_store is not None:
        await store.check(config.output_store, flag="--render-output-dir")
    if config.media_store is not None:
        await store.check(config.media_store, flag="--media-root")
    return store


async def create_server(
    config: ExportConfig,
    store: JobStore,
    *,
    resolver: Resolver | None = None,
) -> ExportServer:
    """Binds ``config.listen`` (port 0 picks one), starts serving and reconciles every
    non-terminal job in ``store``. An object store as the render services' output directory or
    the media root is checked first (``open_object_store``). ``resolver``: how webhook
    destinations' names are resolved (None: the system's)."""
    async with contextlib.AsyncExitStack() as resources:
        objects = await open_object_store(config, resources)
        export_server = await _create_server(config, store, objects, resolver)
        export_server.resources = resources.pop_all()
        if objects is not None and config.output_store is not None:
            export_server.store_follower = await _follow_output_store(
                export_server.health, objects, config.output_store
            )
        return export_server


async def _follow_output_store(
    health: GracefulHealth, store: ObjectStore, location: S3Location
) -> asyncio.Task[None] | None:
    """STORE_HEALTH_NAME SERVING (the store answered at the start), then following it."""
    if not isinstance(health, health_aio.HealthServicer):
        return None
    await health.set(STORE_HEALTH_NAME, health_pb2.HealthCheckResponse.SERVING)
    followed = [FollowedStore(store, location, "--render-output-dir")]
    return asyncio.create_task(follow_stores(followed, health, [STORE_HEALTH_NAME]))


async def _create_server(
    config: ExportConfig,
    store: JobStore,
    objects: ObjectStore | None,
    resolver: Resolver | None,
) -> ExportServer:
    # Outputs in a store are checked and removed there; without one, only files.
    outputs = (
        Outputs(objects, config.output_store) if config.output_store is not None else Outputs()
    )
    hub = ChangeHub()
    store.add_listener(hub.publish)
    changes = await _start_change_feed(config, store, hub)
    job_metrics = JobMetrics()
    store.add_listener(job_metrics.observe)
    metrics.STORE_AVAILABLE.set(1 if store.available else 0)
    # One channel per render service; each job's calls go to the one its attempt is on.
    render_pool = RenderPool(config.render_addr, config.render_tls)
    await render_pool.start()
    # The tracker waits a database outage out; the servicer answers UNAVAILABLE meanwhile.
    # This replica's heartbeat and claims; every tracker write names its lease.
    ownership = Ownership(store, ttl=config.lease_ttl)
    supervisor = RenderSupervisor(
        PatientStore(store),
        render_pool,
        config.tracker,
        ownership,
        render_output_dir=config.render_output_dir,
        outputs=outputs,
        split_policy=config.split,
    )
    deliverer = Deliverer(store, config.webhooks, store.writer, resolver=resolver)
    store.add_listener(deliverer.observe)
    server = create_grpc_server()
    export_servicer = ExportServicer(
        store,
        hub,
        supervisor,
        config,
        render_pool=render_pool,
        resolver=resolver,
        deliveries_due=deliverer.wake,
    )
    export_pb2_grpc.add_ExportServiceServicer_to_server(export_servicer, server)
    add_operations_servicer(OperationsServicer(export_servicer), server)
    health = await add_health_and_reflection(server, SERVED_NAMES)
    store.add_availability_listener(_report_database_health(health))
    render_health: RenderHealthReporter | None = None
    if isinstance(health, health_aio.HealthServicer):
        render_health = RenderHealthReporter(
            lambda: [member.channel for member in render_pool.members],
            health,
            render_health_name(SERVICE_NAME),
        )
        await render_health.check()
        render_health.start()
    port = bind(server, config.listen, config.tls)
    await server.start()
    await supervisor.start()
    deliverer.start()
    retention: RetentionSweeper | None = None
    if config.job_retention is not None:
        retention = RetentionSweeper(store, config.job_retention, outputs)
        retention.start()
    orphan_sweep: OrphanSweeper | None = None
    swept = objects is not None or config.render_output_dir is not None
    if swept and config.orphan_sweep_interval > 0:
        orphan_sweep = OrphanSweeper(
            store,
            objects,
            outputs=config.output_store,
            media=config.media_store,
            interval=config.orphan_sweep_interval,
            local_outputs=config.render_output_dir,
        )
        orphan_sweep.start()
    return ExportServer(
        server,
        port,
        store,
        supervisor,
        health,
        render_pool,
        hub,
        render_health=render_health,
        job_metrics=job_metrics,
        changes=changes,
        retention=retention,
        orphan_sweep=orphan_sweep,
        deliverer=deliverer,
    )
