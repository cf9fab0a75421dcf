"""Waiting on observed state: ask again until the answer is the one wanted, or fail naming what
never came. ``poll_until`` for sync tests, ``wait_until`` inside an event loop.

The looks back off: soon after each other first (most states come within a few tens of
milliseconds), then four times a second. Each look at a running stack is a request through its
processes; a long wait (a render, a lease, a retry) need not make twenty of them a second."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

DEFAULT_WITHIN = 60.0
FIRST_INTERVAL = 0.02
MAX_INTERVAL = 0.25
BACKOFF = 1.5


def _intervals(first: float, most: float) -> Iterator[float]:
    interval = first
    while True:
        yield interval
        interval = min(interval * BACKOFF, most)


class _Deadline:
    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        self.at = time.monotonic() + timeout

    def check(self, last: object) -> None:
        if time.monotonic() >= self.at:
            raise AssertionError(
                f"timed out after {self.timeout:g} s waiting for {self.what}; last seen: {last!r}"
            )


def poll_until(
    observe: Callable[[], T | None],
    what: str,
    within: float = DEFAULT_WITHIN,
    interval: float = MAX_INTERVAL,
) -> T:
    """Calls ``observe()`` until it returns something other than None (or False) and returns
    that; ``interval`` is the longest pause between two looks."""
    deadline = _Deadline(what, within)
    pauses = _intervals(min(FIRST_INTERVAL, interval), interval)
    while True:
        seen = observe()
        if seen is not None and seen is not False:
            return seen
        deadline.check(seen)
        time.sleep(next(pauses))


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str = "the condition",
    within: float = DEFAULT_WITHIN,
    interval: float = MAX_INTERVAL,
) -> None:
    """Awaits ``condition()`` (a plain or an async function) until it is true; ``interval`` is
    the longest pause between two looks."""
    deadline = _Deadline(what, within)
    pauses = _intervals(min(FIRST_INTERVAL, interval), interval)
    while True:
        answer = condition()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return
        deadline.check(answer)
        await asyncio.sleep(next(pauses))
