"""How long to wait before asking again, and which gRPC failures are worth asking again.

One backoff for every retry loop of the three processes and the CLI: exponential, capped, with
"equal jitter" (the n-th wait is drawn from [d/2, d], d = min(cap, first * factor**(n-1))), a
server's ``Retry-After`` respected as a floor, and an optional deadline that no wait crosses.
The random draw is an argument, so pure code (``export_service.tracking.decide``) passes one
derived from its seed and stays deterministic; loops with I/O use ``Retries``, which draws from
``random.random`` and reads ``time.monotonic`` unless told otherwise.

Which codes to retry is decided once per kind of call: a unary call that may be repeated, a
watch of one job, a watch of a list.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class Backoff:
    """``first`` and ``cap`` in seconds; ``factor`` the growth per attempt."""

    first: float
    cap: float
    factor: float = 2.0

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry ``attempt`` (1 for the first retry)."""
        growth = min(max(attempt - 1, 0), 64)
        return max(min(self.cap, self.first * self.factor**growth), 0.0)

    def delay(self, attempt: int, draw: float, *, retry_after: float | None = None) -> float:
        """The wait before retry ``attempt``: ``draw`` (in [0, 1)) places it in the upper half
        of its ceiling; never shorter than ``retry_after`` when the server gave one."""
        ceiling = self.ceiling(attempt)
        wait = ceiling / 2 + draw * ceiling / 2
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


class Retries:
    """The retries of one loop: each ``next_delay`` is the next attempt's wait, or None once
    the deadline (monotonic seconds) has passed; the last wait ends at the deadline at most.
    ``budget``: failures may last this long without a break (the deadline is set at the first
    failure after a success). ``reset()`` after a success starts the growth afresh."""

    def __init__(
        self,
        backoff: Backoff,
        *,
        deadline: float | None = None,
        budget: float | None = None,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff
        self.deadline = deadline
        self.budget = budget
        self.attempt = 0
        self._draw = draw
        self._clock = clock

    def reset(self) -> None:
        self.attempt = 0
        if self.budget is not None:
            self.deadline = None

    def next_delay(self, *, retry_after: float | None = None) -> float | None:
        if self.budget is not None and self.deadline is None:
            self.deadline = self._clock() + self.budget
        self.attempt += 1
        wait = self.backoff.delay(self.attempt, self._draw(), retry_after=retry_after)
        if self.deadline is None:
            return wait
        left = self.deadline - self._clock()
        if left <= 0:
            return None
        return min(wait, left)

    async def wait(self, *, retry_after: float | None = None) -> bool:
        """Sleeps the next delay; False (at once) when the deadline has passed."""
        delay = self.next_delay(retry_after=retry_after)
        if delay is None:
            return False
        await asyncio.sleep(delay)
        return True


# A unary call is asked again (by the channel, on another replica: videojob.grpc_setup) only when
# its replica was not reached: every create carries a request id, so even a create is safe.
UNARY_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})

# A watch is resumed (from the last version it saw) after anything but an answer that asking
# again cannot change: a malformed request, a refusal of the caller, a method not served.
_WATCH_PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
# Watching one job: also a job that does not exist (deleted, or never created).
JOB_WATCH_PERMANENT = _WATCH_PERMANENT | {grpc.StatusCode.NOT_FOUND}
# Watching a list: jobs come and go; only the request itself can be wrong.
LIST_WATCH_PERMANENT = _WATCH_PERMANENT


def job_watch_resumable(code: grpc.StatusCode) -> bool:
    return code not in JOB_WATCH_PERMANENT


def list_watch_resumable(code: grpc.StatusCode) -> bool:
    return code not in LIST_WATCH_PERMANENT
