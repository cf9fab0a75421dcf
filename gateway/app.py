"""The gateway's ASGI app: thin routes over the export service's gRPC API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    MalformedRangeHeader,
    RangeNotSatisfiable,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway import sse
from gateway.errors import EXCEPTION_HANDLERS, error_response
from gateway.input_names import InputNames
from gateway.list_watch import ListWatchHub, View
from gateway.media import media_collection
from gateway.middleware import (
    BearerTokenMiddleware,
    BodySizeLimitMiddleware,
    RequestMetricsMiddleware,
)
from gateway.openapi import (
    CURSOR_PATTERN,
    DEFAULT_LIST_LIMIT,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_JOB_ID_LENGTH,
    MAX_LIST_LIMIT,
    MAX_VERSION,
    MAX_WATCH_IDS,
    OPENAPI_DOCUMENT,
)
from gateway.settings import Settings
from gateway.stored_download import stored_object, stored_object_response
from gateway.stored_media import StoredMedia
from gateway.watch_hub import JobWatchHub
from videojob import limits, metrics, tracing
from videojob.endpoints import EXPORT_SERVICE, IDEMPOTENT_REPLAYED_METADATA
from videojob.errors import FailedPrecondition, InvalidArgument, MalformedArgument, NotFound
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import (
    create_channel,
    create_replica_channel,
    replica_server_name,
    replica_target,
)
from videojob.job_json import (
    STATUS_BY_NAME,
    delivery_to_json,
    history_entry_to_json,
    is_terminal,
    job_to_json,
    notify_from_json,
    spec_from_json,
)
from videojob.limits import CONTAINER_MEDIA_TYPES, DEFAULT_CONTAINER
from videojob.storage.location import is_stored_object
from videojob.storage.readiness import store_problem
from videojob.storage.settings import StoreSettings

if TYPE_CHECKING:
    from videojob.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
EXPORT_SERVICE_NAME = EXPORT_SERVICE
# The export service's report of its render services (export_service.render_health).
RENDER_HEALTH_SERVICE_NAME = f"{EXPORT_SERVICE_NAME}/render"
HEALTH_CHECK_TIMEOUT_SECONDS = 2.0
CURSOR = re.compile(CURSOR_PATTERN)
CONTENT_TYPES = CONTAINER_MEDIA_TYPES
LIVEZ_BODY = b'{"status":"ok"}'
MEDIA_PATH = "/api/media"
IDEMPOTENT_REPLAYED_HEADER = "Idempotent-Replayed"


class Export:
    """The export service client and the per-call settings, kept in app.state."""

    def __init__(self, channel: grpc.aio.Channel, settings: Settings) -> None:
        self.channel = channel
        self.stub: export_pb2_grpc.ExportServiceAsyncStub = export_pb2_grpc.ExportServiceStub(
            channel
        )
        self.health = health_pb2_grpc.HealthStub(channel)
        self.timeout = settings.rpc_timeout_seconds


def _export(request: Request) -> Export:
    export: Export = request.app.state.export
    return export


def _job_id(request: Request) -> str:
    job_id: str = request.path_params["id"]
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise NotFound("no job has this id")
    return job_id


async def _job_json(request: Request, job: export_pb2.VideoJob) -> dict[str, Any]:
    input_names: InputNames = request.app.state.input_names
    return await input_names.job_json(job)


async def _job_response(request: Request, job: export_pb2.VideoJob) -> JSONResponse:
    return JSONResponse(await _job_json(request, job))


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None:
        return uuid.uuid4().hex
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not all("!" <= c <= "~" for c in key):
        raise MalformedArgument(
            "Idempotency-Key",
            f"must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters",
        )
    return key


async def create_job(request: Request) -> Response:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, "the body must be application/json (a RenderSpec)")
    request_id = _idempotency_key(request)
    try:
        body: Any = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise MalformedArgument("body", f"is not valid JSON: {error}") from None
    notify = notify_from_json(body)
    spec = spec_from_json(body)
    export = _export(request)
    call = export.stub.CreateExport(
        export_pb2.CreateExportRequest(request_id=request_id, spec=spec, notify=notify),
        timeout=export.timeout,
    )
    job = await call
    tracing.annotate_current_span(job_id=job.id)
    # A replayed Idempotency-Key gets the first answer again (201, the same job), marked.
    headers = {"Location": f"/api/jobs/{job.id}"}
    if _replayed(await call.trailing_metadata()):
        headers[IDEMPOTENT_REPLAYED_HEADER] = "true"
    return JSONResponse(await _job_json(request, job), status_code=201, headers=headers)


def _replayed(metadata: Any) -> bool:
    return any(
        key == IDEMPOTENT_REPLAYED_METADATA and value == "true" for key, value in metadata or ()
    )


def _status_param(request: Request) -> export_pb2.JobStatus.ValueType:
    status_name = request.query_params.get("status")
    if status_name is None:
        return export_pb2.JOB_STATUS_UNSPECIFIED
    if status_name not in STATUS_BY_NAME:
        raise InvalidArgument("status", f"must be one of {', '.join(STATUS_BY_NAME)}")
    return STATUS_BY_NAME[status_name]


def _limit_param(request: Request) -> int:
    return _integer_param(request, "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)


def _list_request(request: Request) -> export_pb2.ListExportsRequest:
    status = _status_param(request)
    limit = _limit_param(request)
    cursor = request.query_params.get("cursor")
    if cursor is not None and not CURSOR.fullmatch(cursor):
        raise MalformedArgument("cursor", "is not a cursor this service issued")
    return export_pb2.ListExportsRequest(page_size=limit, page_token=cursor or "", status=status)


def _ids_param(request: Request) -> list[str]:
    text = request.query_params.get("ids", "")
    ids = text.split(",") if text else []
    if len(ids) > MAX_WATCH_IDS or not all(0 < len(job_id) <= MAX_JOB_ID_LENGTH for job_id in ids):
        raise InvalidArgument(
            "ids",
            f"must be at most {MAX_WATCH_IDS} comma-separated job ids of 1 to "
            f"{MAX_JOB_ID_LENGTH} characters",
        )
    return ids


async def page_events(request: Request) -> Response:
    """The page's one event stream: the view's jobs as they are now, then their changes."""
    view = View.of(int(_status_param(request)), _limit_param(request), _ids_param(request))
    hub: ListWatchHub = request.app.state.list_watch_hub
    hub.check_room(view)
    events = sse.list_events(hub, view, request.app.state.settings.heartbeat_seconds)
    return StreamingResponse(events, media_type="text/event-stream", headers=sse.SSE_HEADERS)


async def list_jobs(request: Request) -> Response:
    list_request = _list_request(request)
    export = _export(request)
    page = await export.stub.ListExports(list_request, timeout=export.timeout)
    return JSONResponse(
        {
            "jobs": await request.app.state.input_names.jobs_json(list(page.jobs)),
            "nextCursor": page.next_page_token or None,
        }
    )


async def jobs_collection(request: Request) -> Response:
    if request.method == "POST":
        return await create_job(request)
    return await list_jobs(request)


async def _get(request: Request, job_id: str) -> export_pb2.VideoJob:
    export = _export(request)
    job: export_pb2.VideoJob = await export.stub.GetExport(
        export_pb2.GetExportRequest(id=job_id), timeout=export.timeout
    )
    return job


async def get_job(request: Request) -> Response:
    return await _job_response(request, await _get(request, _job_id(request)))


async def job_resource(request: Request) -> Response:
    if request.method == "DELETE":
        return await delete_job(request)
    return await get_job(request)


async def delete_job(request: Request) -> Response:
    """A finished job's record, history and file are removed: 204, and 404 from then on."""
    export = _export(request)
    await export.stub.DeleteExport(
        export_pb2.DeleteExportRequest(id=_job_id(request)), timeout=export.timeout
    )
    return Response(status_code=204)


async def cancel_job(request: Request) -> Response:
    export = _export(request)
    job = await export.stub.CancelExport(
        export_pb2.CancelExportRequest(id=_job_id(request)), timeout=export.timeout
    )
    return await _job_response(request, job)


def _integer_param(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    """A whole-number query parameter: 400 when it is not a number, 422 outside its bounds."""
    text = request.query_params.get(name)
    if text is None:
        return default
    bounds = f"must be an integer from {minimum} to {maximum}"
    negative = text.startswith("-")
    digits = text[1:] if negative else text
    if not digits.isascii() or not digits.isdigit():
        raise MalformedArgument(name, bounds)
    significant = digits.lstrip("0")
    if len(significant) > len(str(maximum)):
        raise InvalidArgument(name, bounds)
    value = -int(significant or "0") if negative else int(significant or "0")
    if not minimum <= value <= maximum:
        raise InvalidArgument(name, bounds)
    return value


async def job_deliveries(request: Request) -> Response:
    """The job's webhook deliveries, oldest first (ListJobDeliveries)."""
    job_id = _job_id(request)
    export = _export(request)
    answer = await export.stub.ListJobDeliveries(
        export_pb2.ListJobDeliveriesRequest(id=job_id), timeout=export.timeout
    )
    return JSONResponse({"deliveries": [delivery_to_json(d) for d in answer.deliveries]})


async def job_history(request: Request) -> Response:
    """A page of the job's committed changes, oldest first (ListJobHistory)."""
    job_id = _job_id(request)
    after_version = _integer_param(request, "afterVersion", 0, 0, MAX_VERSION)
    limit = _integer_param(
        request, "limit", limits.DEFAULT_HISTORY_LIMIT, 1, limits.MAX_HISTORY_LIMIT
    )
    export = _export(request)
    page = await export.stub.ListJobHistory(
        export_pb2.ListJobHistoryRequest(id=job_id, after_version=after_version, page_size=limit),
        timeout=export.timeout,
    )
    return JSONResponse(
        {
            "entries": [history_entry_to_json(entry) for entry in page.entries],
            "nextAfterVersion": page.next_after_version or None,
        }
    )


async def job_events(request: Request) -> Response:
    job_id = _job_id(request)
    after_version = sse.parse_last_event_id(
        request.headers.get("last-event-id"), request.query_params.get("lastEventId")
    )
    hub: JobWatchHub = request.app.state.watch_hub
    # A job someone already watches exists; its newest state is at hand without a call.
    latest = hub.cached(job_id)
    if latest is not None:
        terminal, version = latest.terminal, latest.version
    else:
        job = await _get(request, job_id)
        terminal, version = is_terminal(job), job.version
    if after_version > version:
        # Ahead of the job (a client's stale or invented id): it gets the current state, as
        # a new watcher would, rather than a wait for versions that may never come.
        after_version = version - 1
    if terminal and after_version >= version:
        # Nothing more will ever come; 204 also tells EventSource to stop reconnecting.
        return Response(status_code=204, headers=sse.SSE_HEADERS)
    events = sse.job_events(
        hub, job_id, after_version, request.app.state.settings.heartbeat_seconds
    )
    return StreamingResponse(events, media_type="text/event-stream", headers=sse.SSE_HEADERS)


class VideoFileResponse(FileResponse):
    """A job's file, Range requests included, whose refusals of a Range header are the API's
    JSON errors: 400 naming ``Range`` for one that cannot be read, 416 with ``Content-Range:
    bytes */SIZE`` (RFC 9110) for one that starts past the end of the file. A range unit other
    than bytes is ignored (RFC 9110): the whole file."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        unit, separator, _ = http_range.partition("=")
        if separator and unit.strip().lower() != "bytes":
            return []
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            raise MalformedArgument(
                "Range",
                "must be bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX (FIRST <= LAST), "
                "or several of them separated by commas",
            ) from None
        except RangeNotSatisfiable:
            raise HTTPException(
                416,
                f"the range starts past the end of the file ({file_size} bytes)",
                headers={"Content-Range": f"bytes */{file_size}"},
            ) from None


def _no_file(job: export_pb2.VideoJob) -> str:
    """Why an unfinished (or failed, or cancelled) job has no file to download, truthfully."""
    if job.status == export_pb2.CANCELLED:
        return "the job was cancelled: it has no file and never will"
    if job.status == export_pb2.FAILED:
        return "the job failed: it has no file and never will (its error says why)"
    if job.status == export_pb2.COMPLETED:
        return "the job completed without a file"
    status = job_to_json(job)["status"]
    return f"the job is {status}; its file exists once it has completed"


def _existing_file(path: Path) -> Path | None:
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return resolved if resolved.is_file() else None


async def download(request: Request) -> Response:
    job_id = _job_id(request)
    job = await _get(request, job_id)
    if job.status != export_pb2.COMPLETED or not job.output_path:
        raise FailedPrecondition(_no_file(job))
    container = job.spec.output.container or DEFAULT_CONTAINER
    if is_stored_object(job.output_path):
        return await _stored_download(request, job, container)
    path = Path(job.output_path)
    if container not in CONTENT_TYPES or path.suffix != f".{container}":
        logger.error("job %s has an unexpected output path %r", job_id, job.output_path)
        return error_response(500, "the job's output path is not a video this gateway serves")
    resolved = await asyncio.to_thread(_existing_file, path)
    if resolved is None:
        raise HTTPException(410, "the job's file no longer exists")
    return VideoFileResponse(
        resolved,
        media_type=CONTENT_TYPES[container],
        filename=f"{job.id}.{container}",
        content_disposition_type="attachment",
    )


async def _stored_download(request: Request, job: export_pb2.VideoJob, container: str) -> Response:
    settings: Settings = request.app.state.settings
    store: ObjectStore | None = getattr(request.app.state, "output_store", None)
    where = stored_object(job.output_path, settings.output_store)
    if store is None or where is None or container not in CONTENT_TYPES:
        logger.error(
            "job %s has an output this gateway does not serve: %r", job.id, job.output_path
        )
        return error_response(
            500, "the job's output is in an object store this gateway does not serve"
        )
    return await stored_object_response(
        request,
        store,
        where,
        media_type=CONTENT_TYPES[container],
        filename=f"{job.id}.{container}",
        mode=settings.downloads,
        link_seconds=settings.download_link_seconds,
        parse_range=VideoFileResponse._parse_range_header,
    )


async def _health_state(export: Export, service: str) -> str:
    """The export service's health of ``service``: SERVING, NOT_SERVING, SERVICE_UNKNOWN, or
    UNREACHABLE when it does not answer."""
    try:
        answer = await export.health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_CHECK_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return "SERVICE_UNKNOWN"
        return "UNREACHABLE"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def _export_problem(state: str) -> str:
    if state == "UNREACHABLE":
        return "the export service is not reachable"
    return f"the export service is {state}"


async def healthz(request: Request) -> Response:
    """The export service serves (as pinned), plus whether its render services answer: a job
    is accepted while they do not, and waits for them."""
    export = _export(request)
    state, renders = await asyncio.gather(
        _health_state(export, EXPORT_SERVICE_NAME),
        _health_state(export, RENDER_HEALTH_SERVICE_NAME),
    )
    if state != "SERVING":
        body = {"status": "unavailable", "export": state, "message": _export_problem(state)}
        return JSONResponse({**body, "renders": renders}, status_code=503)
    return JSONResponse({"status": "ok", "export": state, "renders": renders})


async def readyz(request: Request) -> Response:
    """Ready to serve: an export service answers and its job database is up (its overall
    health, service "", follows the database), and the object stores of the media root and of
    the outputs, when there are, answer ("store": "ok", or the first problem)."""
    stored_media: StoredMedia | None = request.app.state.stored_media
    output_store: ObjectStore | None = getattr(request.app.state, "output_store", None)
    output_location = request.app.state.settings.output_store
    state, media_problem, output_problem = await asyncio.gather(
        _health_state(_export(request), ""),
        stored_media.problem() if stored_media is not None else _no_problem(),
        (
            store_problem(output_store, output_location, flag="--render-output-dir")
            if output_store is not None and output_location is not None
            else _no_problem()
        ),
    )
    problem = media_problem or output_problem
    has_store = stored_media is not None or output_store is not None
    store = {"store": problem or "ok"} if has_store else {}
    if state != "SERVING":
        body = {"status": "unavailable", "export": state, "message": _export_problem(state)}
        return JSONResponse({**body, **store}, status_code=503)
    if problem is not None:
        body = {"status": "unavailable", "export": state, "message": problem}
        return JSONResponse({**body, **store}, status_code=503)
    return JSONResponse({"status": "ok", "export": state, **store})


async def _no_problem() -> str | None:
    return None


async def prometheus_metrics(request: Request) -> Response:
    body, content_type = metrics.exposition(metrics.GATEWAY)
    return Response(body, headers={"Content-Type": content_type})


async def livez(request: Request) -> Response:
    return Response(LIVEZ_BODY, media_type="application/json")


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI_DOCUMENT)


# What the page asks for at a time, written into index.html in place of {{NAME}}: the jobs of
# one page of the list (and of the event stream that follows them), the history entries of one
# request and the queued jobs it re-reads to follow their place in line (as many as a request
# may ask for).
PAGE_SIZES = {
    "LIST_LIMIT": DEFAULT_LIST_LIMIT,
    "HISTORY_LIMIT": limits.MAX_HISTORY_LIMIT,
    "QUEUE_LIMIT": MAX_LIST_LIMIT,
}


def _page_with_sizes() -> str:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for name, size in PAGE_SIZES.items():
        page = page.replace("{{" + name + "}}", str(size))
    return page


async def index(request: Request) -> Response:
    page = await asyncio.to_thread(_page_with_sizes)
    return Response(page, media_type="text/html", headers={"Cache-Control": "no-cache"})


async def docs(request: Request) -> Response:
    """The OpenAPI document as a page (gateway/static/docs.js renders /openapi.json)."""
    return FileResponse(STATIC_DIR / "docs.html", headers={"Cache-Control": "no-cache"})


async def favicon(request: Request) -> Response:
    return FileResponse(
        STATIC_DIR / "favicon.svg",
        media_type="image/svg+xml",
        headers={"Cache-Control": "max-age=86400"},
    )


@contextlib.asynccontextmanager
async def _stored_media(settings: Settings) -> AsyncIterator[StoredMedia | None]:
    """With an object store for a media root: its uploads and listing, over one store client,
    spooling in a private directory removed at the end. None otherwise."""
    if settings.media_store is None:
        yield None
        return
    from videojob.storage.object_store import ObjectStore  # aiobotocore: only when used

    spool_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="videojob-uploads-"))
    try:
        async with ObjectStore(settings.store_settings or StoreSettings.from_environ()) as store:
            yield StoredMedia(store, settings.media_store, spool_dir)
    finally:
        await asyncio.to_thread(shutil.rmtree, spool_dir, ignore_errors=True)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if "," in settings.export_addr:
            # Every export replica answers for every job: calls go to those serving, in turn.
            target = await asyncio.to_thread(replica_target, settings.export_addr)
            channel = create_replica_channel(
                target,
                EXPORT_SERVICE_NAME,
                settings.export_tls,
                replica_server_name(settings.export_addr),
            )
        else:
            channel = create_channel(settings.export_addr, settings.export_tls)
        export = Export(channel, settings)
        app.state.export = export
        stored_media_context = _stored_media(settings)
        app.state.stored_media = stored_media = await stored_media_context.__aenter__()
        app.state.input_names = input_names = InputNames(
            settings.media_root, stored_media=stored_media
        )
        app.state.watch_hub = JobWatchHub(
            export.stub, retry_seconds=settings.upstream_retry_seconds, input_names=input_names
        )
        app.state.list_watch_hub = ListWatchHub(
            export.stub,
            retry_seconds=settings.upstream_retry_seconds,
            max_views=settings.max_event_views,
            input_names=input_names,
        )
        hubs = (app.state.list_watch_hub, app.state.watch_hub)
        resources = contextlib.AsyncExitStack()
        if settings.output_store is not None:
            from videojob.storage.object_store import ObjectStore  # aiobotocore: only when used

            store_settings = settings.store_settings or StoreSettings.from_environ()
            app.state.output_store = await resources.enter_async_context(
                ObjectStore(store_settings)
            )

        async def end_event_streams() -> None:
            """Ends every event stream and its upstream watch (again: nothing more)."""
            for hub in hubs:
                await hub.close()

        # The server calls it as its shutdown begins (gateway.__main__): the streams never end
        # by themselves, so waiting for the lifespan's end would only cut them at the grace.
        app.state.end_event_streams = end_event_streams
        try:
            yield
        finally:
            await end_event_streams()
            await channel.close(grace=None)
            await resources.aclose()
            await stored_media_context.__aexit__(None, None, None)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/favicon.svg", favicon, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", prometheus_metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/api/events", page_events, methods=["GET"]),
        Route("/api/jobs", jobs_collection, methods=["GET", "POST"]),
        Route(MEDIA_PATH, media_collection, methods=["GET", "POST"]),
        Route("/api/jobs/{id}", job_resource, methods=["GET", "DELETE"]),
        Route("/api/jobs/{id}/cancel", cancel_job, methods=["POST"]),
        Route("/api/jobs/{id}/events", job_events, methods=["GET"]),
        Route("/api/jobs/{id}/history", job_history, methods=["GET"]),
        Route("/api/jobs/{id}/deliveries", job_deliveries, methods=["GET"]),
        Route("/api/jobs/{id}/download", download, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    # Outermost: every answer is measured, the middleware's own refusals (401, 413) included.
    middleware: list[Middleware] = [Middleware(RequestMetricsMiddleware, routes=routes)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
                expose_headers=[
                    "Content-Disposition",
                    "Content-Length",
                    "Content-Range",
                    "Location",
                    IDEMPOTENT_REPLAYED_HEADER,
                    "Retry-After",
                ],
                max_age=600,
            )
        )
    if settings.api_token:
        middleware.append(Middleware(BearerTokenMiddleware, token=settings.api_token))
    middleware.append(
        Middleware(
            BodySizeLimitMiddleware,
            max_bytes=settings.max_body_bytes,
            streamed_paths=frozenset({MEDIA_PATH}),
        )
    )

    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
