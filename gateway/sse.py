"""The event streams: a job's shared watch (gateway.watch_hub), or a view's shared list watch
(gateway.list_watch, ``GET /api/events``) -> Server-Sent Events.

Frames: ``event: progress|completed|failed|cancelled``, ``id: <job version>``,
``data: <job JSON>``; a ``: keep-alive`` comment when nothing happened for a while; the stream
ends after the terminal event, or with an ``: upstream unavailable`` comment when the watch
gave up, or with ``: gateway shutting down`` at once when the gateway stops (either way the
client resumes with ``Last-Event-ID``). When the HTTP client leaves, Starlette
cancels the generator and its subscription is dropped (the last one stops the watch).

The page's stream (``list_events``) has ``event: job`` frames without ``id:``: every connection
starts with the current state of each job of the view, so a reconnect needs no cursor. It never
ends by itself; it ends with the same comments when its watch gave up or the gateway stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.list_watch import ListWatchHub, View
from gateway.watch_hub import Ended, JobWatchHub
from videojob import metrics, stamps
from videojob.errors import MalformedArgument
from videojob.limits import MAX_VERSION_DIGITS

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
KEEP_ALIVE = b": keep-alive\n\n"
RETRY_MILLISECONDS = 1000
RETRY = f"retry: {RETRY_MILLISECONDS}\n\n".encode()
UPSTREAM_ENDED = b": upstream unavailable\n\n"
SHUTTING_DOWN = b": gateway shutting down\n\n"


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
    if not value.isascii() or not value.isdigit() or len(value) > MAX_VERSION_DIGITS:
        raise MalformedArgument(name, "must be a job version (a non-negative integer)")
    return int(value)


async def job_events(
    hub: JobWatchHub, job_id: str, after_version: int, heartbeat_seconds: float
) -> AsyncIterator[bytes]:
    """Frames for one job, from the state after ``after_version`` up to the terminal one."""
    yield RETRY
    subscribers = metrics.SSE_SUBSCRIBERS.labels("job")
    subscribers.inc()
    try:
        async for frame in _job_frames(hub, job_id, after_version, heartbeat_seconds):
            yield frame
    finally:
        subscribers.dec()


async def _job_frames(
    hub: JobWatchHub, job_id: str, after_version: int, heartbeat_seconds: float
) -> AsyncIterator[bytes]:
    with hub.subscribe(job_id, after_version, heartbeat_seconds) as subscription:
        while True:
            item = await subscription.next()
            if item is None:
                yield KEEP_ALIVE
            elif isinstance(item, Ended):
                # The client reconnects with Last-Event-ID (EventSource does so by itself).
                yield SHUTTING_DOWN if item.shutting_down else UPSTREAM_ENDED
                return
            else:
                stamps.stamp("gateway.sse_yield", job_id, item.version)
                yield item.data
                if item.terminal:
                    return


async def list_events(
    hub: ListWatchHub, view: View, heartbeat_seconds: float
) -> AsyncIterator[bytes]:
    """The view's jobs as they are now, then each change, until the watch ends."""
    subscribers = metrics.SSE_SUBSCRIBERS.labels("list")
    subscribers.inc()
    try:
        async for frame in _list_frames(hub, view, heartbeat_seconds):
            yield frame
    finally:
        subscribers.dec()


async def _list_frames(
    hub: ListWatchHub, view: View, heartbeat_seconds: float
) -> AsyncIterator[bytes]:
    with hub.subscribe(view) as subscription:
        yield RETRY
        while True:
            item = await subscription.next(heartbeat_seconds)
            if item is None:
                yield KEEP_ALIVE
            elif isinstance(item, Ended):
                yield SHUTTING_DOWN if item.shutting_down else UPSTREAM_ENDED
                return
            else:
                yield b"".join(frame.data for frame in item)
