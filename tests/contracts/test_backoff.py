"""The one backoff of every retry loop (videojob.backoff), and which gRPC failures each kind of
call asks again after: pure, so tested with given draws and a given clock."""

from __future__ import annotations

import grpc
import pytest

from videojob.backoff import (
    JOB_WATCH_PERMANENT,
    LIST_WATCH_PERMANENT,
    UNARY_RETRYABLE,
    Backoff,
    Retries,
    job_watch_resumable,
    list_watch_resumable,
)
from videojob.grpc_setup import REPLICA_RETRY_POLICY

BACKOFF = Backoff(first=0.5, cap=4.0)


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(0, 0.5), (1, 0.5), (2, 1.0), (4, 4.0), (99, 4.0)]
)
def test_the_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert BACKOFF.ceiling(attempt) == ceiling


def test_the_draw_places_the_wait_in_the_upper_half_of_its_ceiling() -> None:
    assert BACKOFF.delay(3, 0.0) == 1.0
    assert BACKOFF.delay(3, 0.5) == 1.5
    assert BACKOFF.delay(3, 0.999) == pytest.approx(2.0, abs=0.01)


def test_a_servers_retry_after_is_a_floor() -> None:
    assert BACKOFF.delay(1, 0.0, retry_after=30.0) == 30.0
    assert BACKOFF.delay(4, 0.0, retry_after=0.1) == 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_wait_crosses_the_deadline_and_none_comes_after_it() -> None:
    clock = Clock()
    retries = Retries(BACKOFF, deadline=103.0, draw=lambda: 0.0, clock=clock)
    assert [retries.next_delay(), retries.next_delay()] == [0.25, 0.5]
    clock.now = 102.5
    assert retries.next_delay() == 0.5  # 1.0 cut to what is left
    clock.now = 103.0
    assert retries.next_delay() is None


def test_a_budget_runs_from_the_first_failure_after_a_success() -> None:
    clock = Clock()
    retries = Retries(BACKOFF, budget=5.0, draw=lambda: 1.0, clock=clock)
    assert retries.next_delay() == 0.5
    assert retries.deadline == 105.0
    clock.now = 104.0
    assert retries.next_delay() == 1.0
    retries.reset()  # an answer: the growth and the budget start afresh
    assert retries.deadline is None
    clock.now = 200.0
    assert retries.next_delay() == 0.5
    assert retries.deadline == 205.0
    clock.now = 205.0
    assert retries.next_delay() is None


async def test_wait_sleeps_or_says_the_time_is_up() -> None:
    clock = Clock()
    retries = Retries(Backoff(first=0.0, cap=0.0), deadline=101.0, clock=clock)
    assert await retries.wait() is True
    clock.now = 101.0
    assert await retries.wait() is False


def test_retryable_codes_per_kind_of_call() -> None:
    code = grpc.StatusCode
    assert {code.UNAVAILABLE} == UNARY_RETRYABLE
    assert REPLICA_RETRY_POLICY["retryableStatusCodes"] == ["UNAVAILABLE"]
    # A job that does not exist ends its watch; a list watch never hears NOT_FOUND as final.
    assert not job_watch_resumable(code.NOT_FOUND)
    assert list_watch_resumable(code.NOT_FOUND)
    assert {code.NOT_FOUND} == JOB_WATCH_PERMANENT - LIST_WATCH_PERMANENT
    for resumable in (job_watch_resumable, list_watch_resumable):
        assert resumable(code.UNAVAILABLE) and resumable(code.INTERNAL)
        assert not resumable(code.INVALID_ARGUMENT) and not resumable(code.UNAUTHENTICATED)
