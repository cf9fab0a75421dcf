"""The job event stream: WatchExport -> Server-Sent Events frames.

Frames: ``event: progress|completed|failed|cancelled``, ``id: <job version>``,
``data: <job JSON>``; a ``: keep-alive`` comment when nothing happened for a while; the stream
ends after the terminal event. When the HTTP client leaves, Starlette cancels the generator and
the ``finally`` cancels the gRPC call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import grpc

from gateway.job_json import is_terminal, job_to_json, sse_event_name
from videojob.errors import InvalidArgument
from videojob.export.v1 import export_pb2, export_pb2_grpc

logger = logging.getLogger(__name__)

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
KEEP_ALIVE = b": keep-alive\n\n"
RETRY_MILLISECONDS = 1000
_MAX_VERSION_DIGITS = 18


def parse_last_event_id(header: str | None, query: str | None) -> int:
    """The version to resume after: the ``Last-Event-ID`` header, else ``lastEventId``, else 0.
    Each one that is present must be a version number."""
    versions = [
        _version(value, name)
        for value, name in ((header, "Last-Event-ID"), (query, "lastEventId"))
        if value is not None
    ]
    return versions[0] if versions else 0


def _version(value: str, name: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_VERSION_DIGITS:
        raise InvalidArgument(name, "must be a job version (a non-negative integer)")
    return int(value)


def job_frame(job: export_pb2.VideoJob) -> bytes:
    data = json.dumps(job_to_json(job), separators=(",", ":"))
    return f"event: {sse_event_name(job)}\nid: {job.version}\ndata: {data}\n\n".encode()


async def job_events(
    stub: export_pb2_grpc.ExportServiceAsyncStub,
    job_id: str,
    after_version: int,
    heartbeat_seconds: float,
) -> AsyncIterator[bytes]:
    """Frames for one job, from the state after ``after_version`` up to the terminal one."""
    call = stub.WatchExport(export_pb2.WatchExportRequest(id=job_id, after_version=after_version))
    read: asyncio.Future[export_pb2.VideoJob | object] | None = None
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        while True:
            if read is None:
                read = asyncio.ensure_future(call.read())
            done, _ = await asyncio.wait({read}, timeout=heartbeat_seconds)
            if not done:
                yield KEEP_ALIVE
                continue
            message = read.result()
            read = None
            if message is grpc.aio.EOF:  # type: ignore[attr-defined]
                return
            assert isinstance(message, export_pb2.VideoJob)
            if message.version <= after_version:
                continue
            after_version = message.version
            yield job_frame(message)
            if is_terminal(message):
                return
    except grpc.aio.AioRpcError as error:
        # The client reconnects with Last-Event-ID (EventSource does so by itself).
        logger.info("watch of %s ended: %s %s", job_id, error.code().name, error.details())
        yield f": upstream {error.code().name.lower()}\n\n".encode()
    finally:
        if read is not None:
            read.cancel()
        call.cancel()
