"""Downloads of outputs stored in an object store (``outputPath`` ``s3://bucket/key``): streamed
from the store through the gateway (``Range`` as for a file), or answered with a redirect to a
presigned link, computed for this request and never stored (``--downloads``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from videojob.errors import StoredObjectMissing
from videojob.storage.location import BadLocation, S3Location, parse_location

if TYPE_CHECKING:
    from videojob.storage.object_store import ObjectStore

PROXY = "proxy"
REDIRECT = "redirect"
DOWNLOAD_MODES = (PROXY, REDIRECT)


def stored_object(url: str, location: S3Location | None) -> tuple[str, str] | None:
    """The bucket and key of ``url`` when it names an object under ``location`` (the render
    services' output directory: nothing else is served); None otherwise."""
    if location is None:
        return None
    try:
        parsed = parse_location(url)
    except BadLocation:
        return None
    if not isinstance(parsed, S3Location) or parsed.bucket != location.bucket:
        return None
    if not parsed.prefix.startswith(location.key_prefix):
        return None
    return parsed.bucket, parsed.prefix


def _vanished(url: str) -> HTTPException:
    return HTTPException(410, f"the job's file {url} is no longer in the object store")


async def stored_object_response(
    request: Request,
    store: ObjectStore,
    where: tuple[str, str],
    *,
    media_type: str,
    filename: str,
    mode: str,
    link_seconds: int,
    parse_range: Callable[[str, int], list[tuple[int, int]]],
) -> Response:
    """``parse_range`` reads a Range header as for a file (its refusals are the API's
    errors): the byte ranges, each ``(first, end)`` with ``end`` excluded."""
    bucket, key = where
    url = f"s3://{bucket}/{key}"
    try:
        info = await store.head(bucket, key)
    except StoredObjectMissing:
        raise _vanished(url) from None
    if mode == REDIRECT:
        link = await store.presign_get(bucket, key, expires_seconds=link_seconds)
        return RedirectResponse(link, status_code=302, headers={"Cache-Control": "no-store"})
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    http_range = request.headers.get("range")
    ranges = parse_range(http_range, info.size) if http_range else []
    # Several ranges are answered with the whole object (RFC 9110 lets a server ignore Range).
    byte_range = ranges[0] if len(ranges) == 1 else None
    if byte_range is None:
        status, length = 200, info.size
    else:
        first, end = byte_range
        status, length = 206, end - first
        headers["Content-Range"] = f"bytes {first}-{end - 1}/{info.size}"
    headers["Content-Length"] = str(length)
    chunks = store.read_range(bucket, key, byte_range)
    try:
        first_chunk = await anext(chunks, b"")
    except StoredObjectMissing:
        raise _vanished(url) from None

    async def body() -> AsyncIterator[bytes]:
        if first_chunk:
            yield first_chunk
        async for chunk in chunks:
            yield chunk

    return StreamingResponse(body(), status_code=status, media_type=media_type, headers=headers)
