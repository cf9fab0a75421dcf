"""Reads a raw Server-Sent Events stream, keeping comments, for the tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Frame:
    event: str | None = None
    id: str | None = None
    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: str | None = None

    @property
    def job(self) -> Any:
        return json.loads("\n".join(self.data))


def frames(response: httpx.Response) -> Iterator[Frame]:
    """Each blank-line-terminated block of the stream, in order."""
    frame = Frame()
    for line in response.iter_lines():
        if line == "":
            yield frame
            frame = Frame()
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
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
    if frame.data or frame.comments:
        yield frame


def events(response: httpx.Response) -> Iterator[Frame]:
    """Only the frames that carry an event."""
    return (frame for frame in frames(response) if frame.data)
