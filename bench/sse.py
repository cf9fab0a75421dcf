"""A minimal Server-Sent Events client on raw asyncio sockets (HTTP/1.1, chunked or not).

Cheap enough that one process can hold thousands of streams; every event is stamped with the
wall-clock time its last byte arrived."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class SseEvent:
    name: str
    id: str
    data: str
    received: float

    def job(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value

    @property
    def terminal(self) -> bool:
        return self.name in TERMINAL_EVENTS


def parse_timestamp(text: str) -> float:
    """An RFC 3339 timestamp (``Z`` or an offset) as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class SseStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._chunked = False

    @classmethod
    async def open(
        cls, host: str, port: int, path: str, *, last_event_id: str | None = None
    ) -> SseStream:
        reader, writer = await asyncio.open_connection(host, port)
        headers = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
        ]
        if last_event_id is not None:
            headers.append(f"Last-Event-ID: {last_event_id}")
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
        await writer.drain()
        stream = cls(reader, writer)
        await stream._read_headers()
        return stream

    async def _read_headers(self) -> None:
        status = (await self._reader.readline()).decode().strip()
        if " 200" not in status:
            raise ConnectionError(f"SSE request answered {status!r}")
        while True:
            line = (await self._reader.readline()).decode().strip()
            if not line:
                return
            name, _, value = line.partition(":")
            if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                self._chunked = True

    async def _lines(self) -> AsyncIterator[str]:
        if not self._chunked:
            while line := await self._reader.readline():
                yield line.decode().rstrip("\r\n")
            return
        pending = b""
        while True:
            size_line = await self._reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            pending += await self._reader.readexactly(size)
            await self._reader.readexactly(2)
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode().rstrip("\r")

    async def events(self) -> AsyncIterator[SseEvent]:
        """Events until the server closes the stream (comments and retry lines skipped)."""
        name, event_id = "message", ""
        data: list[str] = []
        async for line in self._lines():
            if not line:
                if data:
                    yield SseEvent(name, event_id, "\n".join(data), time.time())
                name, data = "message", []
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = value

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
