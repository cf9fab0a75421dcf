"""Reads a Server-Sent Events stream (the gateway's /api/jobs/{id}/events) into frames.

Transport-free: feed it the stream's lines, from any HTTP client, sync or async
(``frames(response.iter_lines())``, ``aframes(response.aiter_lines())``). Comments and
``retry:`` are kept, because the tests look at keep-alives; every frame is stamped with the
wall-clock time its closing blank line arrived, because the benchmarks measure delivery.
"""

from __future__ import annotations

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
        frame = self._frame
        self._frame = SseFrame()
        return frame if frame.data or frame.comments else None


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
