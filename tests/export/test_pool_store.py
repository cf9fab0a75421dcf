# ruff: noqa: F811 (the contract fixtures of test_store are used by name)
"""The store's part of a pool of render services, on both backends (the contract fixtures of
test_store): each attempt's placement recorded by a fenced write that makes no new version, the
current attempt's own progress next to the job's (which never decreases), superseded attempts
kept with why they ended."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from export_service.store import JobNotFound, JobStore, TransitionRejected
from export_service.store.base import Lease, RenderAttempt, StaleLease, render_id_for
from tests.export.test_store import (  # noqa: F401 (fixtures)
    Backend,
    backend,
    database_url,
    new_job,
    store,
)


def placement(job_id: str, attempt: int, instance: str) -> RenderAttempt:
    return RenderAttempt(
        attempt=attempt,
        render_id=render_id_for(job_id, attempt),
        instance_id=instance,
        address=f"{instance}.example:50051",
        started_at=datetime.now(UTC),
    )


async def test_a_placement_is_recorded_without_a_new_version(store: JobStore) -> None:
    await new_job(store)
    job = await store.place_attempt("job1", placed=placement("job1", 1, "render-a"))
    assert job.version == 1 and job.current_attempt is not None
    assert (job.current_attempt.instance_id, job.current_attempt.render_id) == ("render-a", "job1")
    # Placed elsewhere again (the first refused it): the same attempt's record is replaced.
    job = await store.place_attempt("job1", placed=placement("job1", 1, "render-b"))
    assert [(a.attempt, a.instance_id) for a in job.attempts] == [(1, "render-b")]
    assert (await store.get("job1")).attempts == job.attempts


async def test_superseded_attempts_stay_with_why_they_ended(store: JobStore) -> None:
    await new_job(store)
    await store.place_attempt("job1", placed=placement("job1", 1, "render-a"))
    await store.begin_attempt("job1", expected_attempt=1)
    job = await store.place_attempt(
        "job1", placed=placement("job1", 2, "render-b"), superseded_outcome="render-a died"
    )
    first, second = job.attempts
    assert (first.instance_id, first.outcome, first.finished_at is not None) == (
        "render-a",
        "render-a died",
        True,
    )
    assert (second.render_id, second.finished_at, second.outcome) == ("job1-a2", None, "")
    assert job.current_attempt == second and job.retrying


async def test_a_placement_is_refused_for_another_attempt_or_a_finished_job(
    store: JobStore,
) -> None:
    await new_job(store)
    with pytest.raises(TransitionRejected):
        await store.place_attempt("job1", placed=placement("job1", 2, "render-a"))
    await store.cancel("job1")
    with pytest.raises(TransitionRejected):
        await store.place_attempt("job1", placed=placement("job1", 1, "render-a"))


async def test_a_placement_is_fenced_by_the_lease(backend: Backend) -> None:
    store = await backend.open("fenced")
    await store.create(job_id="j", request_id="r", spec=b"s", owner="replica-a")
    held = Lease("replica-a", 1)
    job = await store.place_attempt("j", placed=placement("j", 1, "render-a"), lease=held)
    assert job.current_attempt is not None
    with pytest.raises(StaleLease):
        await store.place_attempt(
            "j", placed=placement("j", 1, "render-b"), lease=Lease("replica-b", 1)
        )
    assert [a.instance_id for a in (await store.get("j")).attempts] == ["render-a"]


async def test_a_new_attempt_s_progress_starts_from_zero_while_the_job_s_never_decreases(
    store: JobStore,
) -> None:
    await new_job(store)
    job = await store.record_progress(
        "job1", progress=86, stage="Rendering", eta_seconds=1, render_seq=5
    )
    assert (job.progress, job.attempt_progress) == (86, 86)
    job = await store.begin_attempt("job1", expected_attempt=1)
    assert (job.progress, job.attempt_progress) == (86, 0)
    job = await store.record_progress(
        "job1", progress=12, stage="Rendering", eta_seconds=9, render_seq=3
    )
    assert (job.progress, job.attempt_progress, job.eta_seconds) == (86, 12, 9)
    with pytest.raises(TransitionRejected):  # within an attempt, progress still only rises
        await store.record_progress(
            "job1", progress=10, stage="Rendering", eta_seconds=9, render_seq=4
        )
    job = await store.record_progress(
        "job1", progress=90, stage="Rendering", eta_seconds=1, render_seq=6
    )
    assert (job.progress, job.attempt_progress) == (90, 90)


async def superseded_twice(store: JobStore) -> None:
    """job1 on attempt 3 (render-c); attempts 1 (render-a) and 2 (render-b) superseded."""
    await new_job(store)
    await store.place_attempt("job1", placed=placement("job1", 1, "render-a"))
    for attempt, instance in ((2, "render-b"), (3, "render-c")):
        await store.begin_attempt("job1", expected_attempt=attempt - 1)
        await store.place_attempt(
            "job1",
            placed=placement("job1", attempt, instance),
            superseded_outcome=f"superseded by attempt {attempt}",
        )


async def test_a_given_up_release_is_noted_on_its_attempt_without_a_new_version(
    store: JobStore,
) -> None:
    await superseded_twice(store)
    before = await store.get("job1")
    history = await store.history("job1")
    job = await store.give_up_release("job1", render_id="job1")
    first, second, third = job.attempts
    assert first.release_given_up_at is not None
    assert (second.release_given_up_at, third.release_given_up_at) == (None, None)
    assert first.outcome == "superseded by attempt 2"  # why it ended is kept
    assert first.shown_outcome.startswith("superseded by attempt 2; release given up")
    # Bookkeeping, as a placement is: the job itself did not change.
    assert (job.version, job.status, job.attempt) == (before.version, before.status, 3)
    assert await store.history("job1") == history
    assert await store.get("job1") == job
    # Noted once: a second give-up keeps the first moment.
    again = await store.give_up_release("job1", render_id="job1")
    assert again.attempts[0].release_given_up_at == first.release_given_up_at


async def test_a_given_up_release_survives_later_placements(store: JobStore) -> None:
    await new_job(store)
    await store.place_attempt("job1", placed=placement("job1", 1, "render-a"))
    await store.begin_attempt("job1", expected_attempt=1)
    # Given up before attempt 2 was placed (its attempt 1 still open)...
    noted = await store.give_up_release("job1", render_id="job1")
    assert noted.attempts[0].release_given_up_at is not None
    # ...the placement that closes attempt 1 keeps the note.
    job = await store.place_attempt(
        "job1", placed=placement("job1", 2, "render-b"), superseded_outcome="render-a died"
    )
    first, second = job.attempts
    assert (first.outcome, first.release_given_up_at) == (
        "render-a died",
        noted.attempts[0].release_given_up_at,
    )
    assert second.release_given_up_at is None


async def test_a_finished_job_s_given_up_release_leaves_it_finished(store: JobStore) -> None:
    await superseded_twice(store)
    cancelled = await store.cancel("job1")
    job = await store.give_up_release("job1", render_id=render_id_for("job1", 2))
    assert (job.status, job.version, job.cancel_requested) == (
        cancelled.status,
        cancelled.version,
        True,
    )
    assert [a.release_given_up_at is not None for a in job.attempts] == [False, True, False]
    assert [a.outcome for a in job.attempts] == [a.outcome for a in cancelled.attempts]
    assert (await store.history("job1"))[-1].version == cancelled.version


async def test_a_give_up_is_refused_for_the_current_attempt_or_an_unknown_render(
    store: JobStore,
) -> None:
    await superseded_twice(store)
    before = await store.get("job1")
    with pytest.raises(TransitionRejected, match="current"):
        await store.give_up_release("job1", render_id=render_id_for("job1", 3))
    with pytest.raises(TransitionRejected, match="no attempt"):
        await store.give_up_release("job1", render_id="job1-a9")
    with pytest.raises(JobNotFound):
        await store.give_up_release("nope", render_id="nope")
    assert await store.get("job1") == before


async def test_a_give_up_is_fenced_by_the_lease(backend: Backend) -> None:
    store = await backend.open("fenced")
    await store.create(job_id="j", request_id="r", spec=b"s", owner="replica-a")
    held = Lease("replica-a", 1)
    await store.place_attempt("j", placed=placement("j", 1, "render-a"), lease=held)
    await store.begin_attempt("j", expected_attempt=1, lease=held)
    await store.place_attempt("j", placed=placement("j", 2, "render-b"), lease=held)
    with pytest.raises(StaleLease):
        await store.give_up_release("j", render_id="j", lease=Lease("replica-b", 1))
    assert (await store.get("j")).attempts[0].release_given_up_at is None
    job = await store.give_up_release("j", render_id="j", lease=held)
    assert job.attempts[0].release_given_up_at is not None
