"""An asyncio SSE reader for the fan-out tests: many streams at once in one event loop."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})


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
        name, event_id = "message", ""
        data: list[str] = []
        async for line in response.aiter_lines():
            if line == "":
                if data:
                    record.events.append(Event(name, int(event_id), "\n".join(data)))
                    record.first_event.set()
                name, event_id, data = "message", "", []
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "":
                record.comments.append(value)
            elif key == "event":
                name = value
            elif key == "id":
                event_id = value
            elif key == "data":
                data.append(value)
    record.ended = True
    return record


async def wait_until(condition: Any, what: str, seconds: float = 60) -> None:
    """Polls ``condition()`` every 20 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
