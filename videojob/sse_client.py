"""Reads a Server-Sent Events stream (the gateway's /api/jobs/{id}/events) into frames.

Feed it the stream's lines from any HTTP client, sync or async (``frames(response.iter_lines())``,
``aframes(response.aiter_lines())``), or open a stream with ``SseStream``: a bare HTTP/1.1 client
on asyncio sockets, cheap enough that one process holds thousands of streams. Comments and
``retry:`` are kept, because tests look at keep-alives; every frame is stamped with the
wall-clock time its closing blank line arrived, because benchmarks measure delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled"})


@dataclass
class SseFrame:
    """One blank-line-terminated block of the stream."""

    event: str | None = None
    id: str | None = None
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: str | None = None
    received: float = 0.0  # time.time() when the frame ended

    @property
    def name(self) -> str:
        """The event's type (``message`` when the frame names none)."""
        return self.event or "message"

    @property
    def text(self) -> str:
        return "\n".join(self.data)

    @property
    def job(self) -> Any:
        """The data as JSON (the gateway sends the job object)."""
        return json.loads(self.text)

    @property
    def is_event(self) -> bool:
        """True for a frame that dispatches an event (it carries data)."""
        return bool(self.data)

    @property
    def terminal(self) -> bool:
        return self.name in TERMINAL_EVENTS


class SseParser:
    """Feed it one line at a time (without its line ending); it returns each finished frame."""

    def __init__(self) -> None:
        self._frame = SseFrame()

    def feed(self, line: str) -> SseFrame | None:
        if line == "":
            finished, self._frame = self._frame, SseFrame()
            finished.received = time.time()
            return finished
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        frame = self._frame
        if name == "":
            frame.comments.append(value)
        elif name == "event":
            frame.event = value
        elif name == "id":
            frame.id = value
        elif name == "data":
            frame.data.append(value)
        elif name == "retry":
            frame.retry = value
        return None

    def end(self) -> SseFrame | None:
        """The unterminated frame at the end of the stream, if it holds anything."""
        frame, self._frame = self._frame, SseFrame()
        if not (frame.data or frame.comments):
            return None
        frame.received = time.time()
        return frame


def frames(lines: Iterable[str]) -> Iterator[SseFrame]:
    """Every frame of the stream, in order (comment-only frames included)."""
    parser = SseParser()
    for line in lines:
        if (frame := parser.feed(line)) is not None:
            yield frame
    if (last := parser.end()) is not None:
        yield last


async def aframes(lines: AsyncIterable[str]) -> AsyncIterator[SseFrame]:
    """``frames`` for an async stream of lines."""
    parser = SseParser()
    async for line in lines:
        if (frame := parser.feed(line)) is not None:
            yield frame
    if (last := parser.end()) is not None:
        yield last


def events(lines: Iterable[str]) -> Iterator[SseFrame]:
    """Only the frames that dispatch an event."""
    return (frame for frame in frames(lines) if frame.is_event)


async def aevents(lines: AsyncIterable[str]) -> AsyncIterator[SseFrame]:
    """Only the frames that dispatch an event, from an async stream of lines."""
    async for frame in aframes(lines):
        if frame.is_event:
            yield frame


class SseStream:
    """One event stream over a plain asyncio connection (HTTP/1.1, chunked or not)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._chunked = False

    @classmethod
    async def open(
        cls, host: str, port: int, path: str, *, last_event_id: str | None = None
    ) -> SseStream:
        """Sends the GET; raises ConnectionError unless the answer is 200."""
        reader, writer = await asyncio.open_connection(host, port)
        request = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
        ]
        if last_event_id is not None:
            request.append(f"Last-Event-ID: {last_event_id}")
        writer.write(("\r\n".join(request) + "\r\n\r\n").encode())
        await writer.drain()
        stream = cls(reader, writer)
        try:
            await stream._read_headers()
        except BaseException:
            await stream.close()
            raise
        return stream

    async def _read_headers(self) -> None:
        status = (await self._reader.readline()).decode().strip()
        if " 200" not in status:
            raise ConnectionError(f"SSE request answered {status!r}")
        while line := (await self._reader.readline()).decode().strip():
            name, _, value = line.partition(":")
            if name.lower() == "transfer-encoding" and "chunked" in value.lower():
                self._chunked = True

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines until the server ends the stream."""
        if not self._chunked:
            while line := await self._reader.readline():
                yield line.decode().rstrip("\r\n")
            return
        pending = b""
        while size_line := await self._reader.readline():
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            pending += await self._reader.readexactly(size)
            await self._reader.readexactly(2)
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode().rstrip("\r")

    def events(self) -> AsyncIterator[SseFrame]:
        """The frames that dispatch an event, until the server ends the stream."""
        return aevents(self.lines())

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
