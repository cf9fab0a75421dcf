# ruff: noqa: F811 (the contract fixtures of test_store are used by name)
"""The transition table (store.transitions) against both backends: every declared transition is
accepted from exactly the statuses it declares and refused from the others, makes a new version
exactly when it says so, and is fenced as it says; a batch fences each row with its own lease.
Cheap now that transitions are data: a new transition gets its row in APPLY and is checked on
both backends. Below them, the neutral SQL's renderings and the outage view's one hook."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from export_service.store import Job, JobNotFound, JobStatus, JobStore, TransitionRejected
from export_service.store.base import (
    Lease,
    ProgressUpdate,
    StaleLease,
    StoreUnavailable,
    render_id_for,
)
from export_service.store.outage import PatientStore
from export_service.store.split_record import part_render_id, planned
from export_service.store.sql import Statement, render_postgres, render_sqlite
from export_service.store.sqlite import SqliteJobStore
from export_service.store.transitions import TRANSITIONS, Fence, Transition
from tests.export.test_pool_store import placement
from tests.export.test_store import (  # noqa: F401 (fixtures)
    OUTPUT,
    Backend,
    backend,
    database_url,
    store,
)

OWNER = "replica-a"
LEASE = Lease(OWNER, 1)


async def job_in(store: JobStore, job_id: str, status: JobStatus) -> Job:
    """An owned job on its second attempt (the first superseded) in ``status``; a FAILED one
    with its render still to release."""
    await store.create(job_id=job_id, request_id=f"req-{job_id}", spec=b"spec", owner=OWNER)
    if job_id.startswith("part_"):  # a split job's part transitions: planned, part 1 placed
        await store.plan_split(job_id, split=planned(30, ((0, 10), (10, 20))), lease=LEASE)
        await store.place_part(
            job_id,
            index=0,
            part_attempt=1,
            render_id=part_render_id(job_id, 0, 1),
            instance_id="render-a",
            address="render-a.example:50051",
            lease=LEASE,
        )
    await store.place_attempt(job_id, placed=placement(job_id, 1, "render-a"), lease=LEASE)
    await store.begin_attempt(job_id, expected_attempt=1, lease=LEASE)
    await store.place_attempt(
        job_id, placed=placement(job_id, 2, "render-a"), superseded_outcome="lost", lease=LEASE
    )
    if status is JobStatus.RUNNING:
        await store.record_progress(
            job_id, progress=10, stage="Rendering", eta_seconds=5, render_seq=3, lease=LEASE
        )
    elif status is JobStatus.COMPLETED:
        await store.complete(
            job_id, output_path=OUTPUT, size_bytes=5, duration_seconds=1, render_seq=4, lease=LEASE
        )
    elif status is JobStatus.FAILED:
        await store.fail(job_id, code="RENDER_LOST", message="lost", release_render=True)
    elif status is JobStatus.CANCELLED:
        await store.cancel(job_id)
    job = await store.get(job_id)
    assert job.status is status
    return job


async def _delete(store: JobStore, job_id: str, lease: Lease) -> object:
    await store.render_released(job_id)  # its render's clean-up done: only the status decides
    return await store.delete(job_id)


# Each transition applied through the JobStore API, with arguments that only its status can
# refuse (``lease``: the one it names, when it can name one).
APPLY: dict[str, Callable[[JobStore, str, Lease], Awaitable[object]]] = {
    "progress": lambda store, job_id, lease: store.record_progress(
        job_id, progress=50, stage="Rendering", eta_seconds=1, render_seq=7, lease=lease
    ),
    "complete": lambda store, job_id, lease: store.complete(
        job_id, output_path=OUTPUT, size_bytes=5, duration_seconds=1, render_seq=8, lease=lease
    ),
    "fail": lambda store, job_id, lease: store.fail(
        job_id, code="FFMPEG_ERROR", message="boom", lease=lease
    ),
    "cancel": lambda store, job_id, lease: store.cancel(job_id, lease=lease),
    "begin_attempt": lambda store, job_id, lease: store.begin_attempt(
        job_id, expected_attempt=2, lease=lease
    ),
    "place_attempt": lambda store, job_id, lease: store.place_attempt(
        job_id, placed=placement(job_id, 2, "render-b"), lease=lease
    ),
    "release_given_up": lambda store, job_id, lease: store.give_up_release(
        job_id, render_id=render_id_for(job_id, 1), lease=lease
    ),
    "render_released": lambda store, job_id, lease: store.render_released(job_id),
    "confirm_lease": lambda store, job_id, lease: store.confirm_lease(job_id, lease=lease),
    "confirm_release": lambda store, job_id, lease: store.confirm_release(job_id, lease=lease),
    "split_planned": lambda store, job_id, lease: store.plan_split(
        job_id, split=planned(30, ((0, 10), (10, 20))), lease=lease
    ),
    "part_placed": lambda store, job_id, lease: store.place_part(
        job_id,
        index=1,
        part_attempt=1,
        render_id=part_render_id(job_id, 1, 1),
        instance_id="render-b",
        address="render-b.example:50051",
        lease=lease,
    ),
    "part_started": lambda store, job_id, lease: store.part_started(
        job_id, index=0, render_id=part_render_id(job_id, 0, 1), lease=lease
    ),
    "part_done": lambda store, job_id, lease: store.part_done(
        job_id, index=0, render_id=part_render_id(job_id, 0, 1), output_path="/p1.mp4", lease=lease
    ),
    "part_retry": lambda store, job_id, lease: store.part_retry(
        job_id,
        index=0,
        render_id=part_render_id(job_id, 0, 1),
        note="render-a was lost",
        stage="Part 1 retrying",
        lease=lease,
    ),
    "delete": _delete,
}


def test_every_declared_transition_is_checked_here() -> None:
    assert set(APPLY) == {transition.name for transition in TRANSITIONS}


@pytest.mark.parametrize("transition", TRANSITIONS, ids=lambda transition: transition.name)
async def test_a_transition_is_accepted_from_exactly_its_start_statuses(
    store: JobStore, transition: Transition
) -> None:
    for status in JobStatus:
        job_id = f"{transition.name}-{status.value.lower()}"
        before = await job_in(store, job_id, status)
        try:
            await APPLY[transition.name](store, job_id, LEASE)
        except TransitionRejected as refused:
            assert status not in transition.start, (transition.name, status, refused.reason)
            assert not isinstance(refused, StaleLease)
            assert refused.current.version == before.version
            continue
        assert status in transition.start, (transition.name, status)
        if transition.deletes:
            with pytest.raises(JobNotFound):
                await store.get(job_id)
            continue
        after = await store.get(job_id)
        assert after.version == before.version + (1 if transition.versioned else 0)
        assert len(await store.history(job_id)) == after.version


@pytest.mark.parametrize(
    "transition",
    [transition for transition in TRANSITIONS if transition.fence is not Fence.NONE],
    ids=lambda transition: transition.name,
)
async def test_a_fenced_transition_is_refused_to_a_stale_lease(
    store: JobStore, transition: Transition
) -> None:
    job_id = transition.name
    before = await job_in(store, job_id, transition.start[0])
    (claimed,) = await store.claim_jobs("replica-b", limit=10, take_over=True)
    assert claimed.lease_epoch == 2
    with pytest.raises(StaleLease) as refused:
        await APPLY[transition.name](store, job_id, LEASE)
    assert refused.value.current.owner == "replica-b"
    assert replace(await store.get(job_id), owner=OWNER, lease_epoch=1) == before
    await APPLY[transition.name](store, job_id, Lease("replica-b", 2))


async def test_a_batch_fences_each_row_with_its_own_lease(store: JobStore) -> None:
    for job_id in ("held0", "held1", "held2", "taken"):
        await store.create(job_id=job_id, request_id=f"r-{job_id}", spec=b"s", owner=OWNER)
    await store.create(job_id="unowned", request_id="r-unowned", spec=b"s")
    await store.claim_jobs("replica-b", limit=10, take_over=True)  # epoch 2 (unowned: 1)
    theirs = Lease("replica-b", 2)
    updates = [
        ProgressUpdate("held0", 10, "Rendering", 1, 1, theirs),
        ProgressUpdate("taken", 10, "Rendering", 1, 1, LEASE),  # replica-a's: stale
        ProgressUpdate("unowned", 10, "Rendering", 1, 1, None),  # unfenced
        ProgressUpdate("held1", 10, "Rendering", 1, 1, theirs),
        ProgressUpdate("held0", 20, "Rendering", 1, 2, theirs),  # a second round
        ProgressUpdate("held2", 10, "Rendering", 1, 1, Lease("replica-b", 3)),  # no such epoch
    ]
    held0, taken, unowned, held1, held0_again, held2 = await store.record_progress_batch(updates)
    assert isinstance(held0, Job) and isinstance(held0_again, Job) and isinstance(held1, Job)
    assert (held0.version, held0_again.version, held0_again.progress) == (2, 3, 20)
    assert isinstance(unowned, Job) and unowned.version == 2
    assert isinstance(taken, StaleLease) and taken.current.owner == "replica-b"
    assert isinstance(held2, StaleLease) and held2.current.version == 1
    assert (await store.get("taken")).version == 1
    history = await store.history("held0")
    assert [(e.version, e.progress, e.owner, e.lease_epoch) for e in history] == [
        (1, 0, OWNER, 1),
        (2, 10, "replica-b", 2),
        (3, 20, "replica-b", 2),
    ]


async def test_a_large_batch_is_one_transaction_with_every_result_in_place(
    store: JobStore,
) -> None:
    job_ids = [f"many{index:03d}" for index in range(250)]
    for job_id in job_ids:
        await store.create(job_id=job_id, request_id=job_id, spec=b"s")
    await store.cancel("many007")
    updates = [ProgressUpdate(job_id, 5, "Rendering", 1, 1) for job_id in reversed(job_ids)]
    updates += [ProgressUpdate(job_id, 4, "Rendering", 1, 2) for job_id in job_ids[:10]]
    results = await store.record_progress_batch(updates)
    assert [getattr(result, "id", None) for result in results[:250]] == [
        None if job_id == "many007" else job_id for job_id in reversed(job_ids)
    ]
    lower = results[250:]
    assert all(isinstance(result, TransitionRejected) for result in lower)
    assert {(await store.get(job_id)).version for job_id in job_ids if job_id != "many007"} == {2}


# The neutral SQL's renderings.


def test_the_neutral_sql_is_rendered_for_each_backend() -> None:
    sql = (
        "UPDATE jobs SET progress = greatest(progress, :progress), updated_at = now(), "
        "stage = ':not_a_param' FROM json_to_recordset(:rows) AS u(p_id text, p_seq int8) "
        "WHERE id = :id AND attempt_progress <= :progress FOR UPDATE"
    )
    sqlite = render_sqlite(sql)
    assert sqlite.sql == (
        "UPDATE jobs INDEXED BY sqlite_autoindex_jobs_1 SET progress = max(progress, ?), "
        "updated_at = ?, stage = ':not_a_param' FROM (SELECT json_extract(value, '$.p_id') "
        "AS p_id, json_extract(value, '$.p_seq') AS p_seq FROM json_each(?)) AS u "
        "WHERE id = ? AND attempt_progress <= ?"
    )
    assert sqlite.names == ("progress", "now", "rows", "id", "progress")
    postgres = render_postgres(sql)
    assert postgres.sql == (
        "UPDATE jobs SET progress = greatest(progress, $1::float8), updated_at = now(), "
        "stage = ':not_a_param' FROM json_to_recordset($2::json) AS u(p_id text, p_seq int8) "
        "WHERE id = $3::text AND attempt_progress <= $1::float8 FOR UPDATE"
    )
    assert postgres.names == ("progress", "rows", "id")
    with pytest.raises(KeyError):  # every parameter has one declared type
        render_postgres(Statement("SELECT :undeclared").sql)


# The outage view: one hook, every operation retried through it.


async def test_every_operation_waits_out_an_outage_through_the_one_hook(tmp_path: Path) -> None:
    inner = await SqliteJobStore.open(tmp_path / "jobs.db", "patient")
    committed: list[tuple[str, int]] = []
    patient = PatientStore(inner, first_delay=0.001, max_delay=0.002)
    patient.add_listener(lambda job: committed.append((job.id, job.version)))
    outages = 0
    execute = inner._execute

    async def unavailable_twice(*args: Any, **kwargs: Any) -> Any:
        nonlocal outages
        if outages < 2:
            outages += 1
            raise StoreUnavailable("down")
        outages = 0
        return await execute(*args, **kwargs)

    inner._execute = unavailable_twice  # type: ignore[method-assign]
    try:
        _, created = await patient.create(job_id="j", request_id="r", spec=b"s")
        assert created and patient.retries == 2
        await patient.record_progress(
            "j", progress=5, stage="Rendering", eta_seconds=1, render_seq=1
        )
        assert (await patient.get("j")).version == 2
        await patient.cancel("j")
        assert [entry.version for entry in await patient.history("j")] == [1, 2, 3]
        assert patient.retries == 10
        assert committed == [("j", 1), ("j", 2), ("j", 3)]  # the inner store's listeners
        with pytest.raises(StoreUnavailable):  # the store itself answers at once
            await inner.get("j")
        assert (await patient.get("j")).version == 3
    finally:
        inner._execute = execute  # type: ignore[method-assign]
        await inner.close()
