"""The gateway tests' view of an event stream read with httpx (videojob.sse_client parses)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from videojob import sse_client
from videojob.sse_client import SseFrame as Frame

__all__ = ["Frame", "events", "frames"]


def frames(response: httpx.Response) -> Iterator[Frame]:
    """Each blank-line-terminated block of the stream, in order."""
    return sse_client.frames(response.iter_lines())


def events(response: httpx.Response) -> Iterator[Frame]:
    """Only the frames that carry an event."""
    return sse_client.events(response.iter_lines())
