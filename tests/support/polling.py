"""Waiting on observed state: ask again until the answer is the one wanted, or fail naming what
never came. ``poll_until`` for sync tests, ``wait_until`` inside an event loop."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_WITHIN = 60.0
DEFAULT_INTERVAL = 0.05


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
    interval: float = DEFAULT_INTERVAL,
) -> T:
    """Calls ``observe()`` until it returns something other than None (or False) and returns
    that."""
    deadline = _Deadline(what, within)
    while True:
        seen = observe()
        if seen is not None and seen is not False:
            return seen
        deadline.check(seen)
        time.sleep(interval)


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str = "the condition",
    within: float = DEFAULT_WITHIN,
    interval: float = DEFAULT_INTERVAL,
) -> None:
    """Awaits ``condition()`` (a plain or an async function) until it is true."""
    deadline = _Deadline(what, within)
    while True:
        answer = condition()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return
        deadline.check(answer)
        await asyncio.sleep(interval)
