"""Event streams read in an event loop for the fan-out tests: many at once, each recorded
(videojob.sse_client parses)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.polling import wait_until
from videojob.sse_client import TERMINAL_EVENTS, aframes

__all__ = ["Event", "StreamRecord", "read_stream", "wait_until"]


@dataclass
class Event:
    name: str
    id: int
    data: str

    @property
    def job(self) -> Any:
        return json.loads(self.data)


@dataclass
class StreamRecord:
    """Everything one client saw, filled while the stream is read."""

    status: int = 0
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    ended: bool = False
    first_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def versions(self) -> list[int]:
        return [event.id for event in self.events]

    @property
    def terminal(self) -> Event | None:
        last = self.events[-1] if self.events else None
        return last if last is not None and last.name in TERMINAL_EVENTS else None


async def read_stream(
    http: httpx.AsyncClient, job_id: str, record: StreamRecord, **headers: str
) -> StreamRecord:
    """Reads the job's event stream into ``record`` until the server ends it."""
    async with http.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as response:
        record.status = response.status_code
        async for frame in aframes(response.aiter_lines()):
            record.comments.extend(frame.comments)
            if frame.is_event:
                record.events.append(Event(frame.name, int(frame.id or 0), frame.text))
                record.first_event.set()
    record.ended = True
    return record
