# ruff: noqa: F811 (the contract fixtures of test_store are used by name)
"""A split job's record on both backends (the contract fixtures of test_store): its plan
recorded once, each part's render recorded before it starts and replaced only by a later
attempt, a part's completion and retry refused for a render that is not the part's now, the
frames of the running parts riding on the job's progress write (one version per write), and a
history entry per part change."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from export_service.job_proto import job_to_api_json
from export_service.store import JobStore, TransitionRejected
from export_service.store.base import Change, Lease, ProgressUpdate, StaleLease
from export_service.store.split_record import JOIN_INDEX, PartState, part_render_id, planned
from tests.export.test_store import (  # noqa: F401 (fixtures)
    Backend,
    backend,
    database_url,
    new_job,
    store,
)
from videojob.render.v1 import spec_pb2

PLAN = planned(90, ((0, 30), (30, 30), (60, 30)))


async def place(store: JobStore, index: int, attempt: int = 1, instance: str = "render-a") -> None:
    await store.place_part(
        "job1",
        index=index,
        part_attempt=attempt,
        render_id=part_render_id("job1", index, attempt),
        instance_id=instance,
        address=f"{instance}.example:50051",
    )


async def test_a_plan_is_recorded_once_with_its_parts_pending(store: JobStore) -> None:
    await new_job(store)
    job = await store.plan_split("job1", split=PLAN, stage="Preparing")
    assert job.version == 2 and job.split == PLAN and job.stage == "Preparing"
    assert job.split_frames == (0, 0, 0)
    assert [part.state for part in job.split.renders] == [PartState.PENDING] * 4
    with pytest.raises(TransitionRejected, match="planned already"):
        await store.plan_split("job1", split=planned(90, ((0, 45), (45, 45))))
    assert (await store.get("job1")).split == PLAN


async def test_a_job_rendered_whole_says_why(store: JobStore) -> None:
    await new_job(store)
    job = await store.plan_split("job1", split=None, reason="the source has a variable frame rate")
    assert (job.split, job.split_reason, job.version) == (
        None,
        "the source has a variable frame rate",
        2,
    )


async def test_each_part_is_placed_before_it_renders_and_only_a_later_attempt_replaces_it(
    store: JobStore,
) -> None:
    await new_job(store)
    await store.plan_split("job1", split=PLAN)
    await place(store, 0)
    await place(store, 2, instance="render-b")
    job = await store.get("job1")
    assert job.split is not None
    first, second, third = job.split.parts
    assert (first.state, first.render_id, first.instance_id, first.attempts) == (
        PartState.RENDERING,
        "job1-p1",
        "render-a",
        1,
    )
    assert second.state is PartState.PENDING and third.address == "render-b.example:50051"
    # Placed elsewhere again for the same attempt (its first service refused): replaced.
    await place(store, 0, instance="render-c")
    await place(store, 0, attempt=2)
    with pytest.raises(TransitionRejected, match="attempt 2 already"):
        await place(store, 0, attempt=1)
    job = await store.get("job1")
    assert job.split is not None and job.split.parts[0].render_id == "job1-p1-a2"


async def test_a_placed_render_waits_for_a_slot_until_its_start_is_recorded_once(
    store: JobStore,
) -> None:
    await new_job(store)
    await store.plan_split("job1", split=PLAN)
    before = datetime.now(UTC).timestamp()
    await place(store, 0)
    await place(store, JOIN_INDEX, instance="render-b")
    job = await store.get("job1")
    assert job.split is not None
    first, join = job.split.parts[0], job.split.join
    assert first.waiting_for_slot and join.waiting_for_slot
    assert before <= first.placed_at <= join.placed_at <= datetime.now(UTC).timestamp()
    assert not job.split.parts[1].waiting_for_slot, "a part not placed waits in no line"

    started = await store.part_started("job1", index=0, render_id="job1-p1")
    assert started.version == job.version + 1 and started.split is not None
    assert not started.split.parts[0].waiting_for_slot
    assert started.split.parts[0].placed_at == first.placed_at
    with pytest.raises(TransitionRejected, match="started already"):
        await store.part_started("job1", index=0, render_id="job1-p1")
    # Placed again (a retry): it waits again, and only its own render can start.
    await store.part_retry("job1", index=0, render_id="job1-p1", note="lost", stage="x")
    retried = await store.get("job1")
    assert retried.split is not None and not retried.split.parts[0].waiting_for_slot
    await place(store, 0, attempt=2)
    with pytest.raises(TransitionRejected, match="rendered by job1-p1-a2"):
        await store.part_started("job1", index=0, render_id="job1-p1")
    again = await store.part_started("job1", index=0, render_id="job1-p1-a2")
    assert again.split is not None and not again.split.parts[0].waiting_for_slot
    done = await store.part_done("job1", index=JOIN_INDEX, render_id="job1-join", output_path="/j")
    assert done.split is not None and not done.split.join.waiting_for_slot


async def test_a_part_done_keeps_its_output_and_its_frames(store: JobStore) -> None:
    await new_job(store)
    await store.plan_split("job1", split=PLAN)
    await place(store, 1)
    job = await store.part_done(
        "job1", index=1, render_id="job1-p2", output_path="/out/job1-p2.mp4"
    )
    assert job.split is not None
    done = job.split.parts[1]
    assert (done.state, done.frames_done, done.output_path) == (
        PartState.DONE,
        30,
        "/out/job1-p2.mp4",
    )
    assert job.split_frames == (0, 30, 0)
    with pytest.raises(TransitionRejected, match="is done"):
        await place(store, 1, attempt=2)


async def test_only_the_parts_current_render_can_end_it(store: JobStore) -> None:
    await new_job(store)
    await store.plan_split("job1", split=PLAN)
    await place(store, 0)
    job = await store.part_retry(
        "job1", index=0, render_id="job1-p1", note="render-a was lost", stage="Part 1 retrying"
    )
    assert job.split is not None and job.stage == "Part 1 retrying"
    assert (job.split.parts[0].state, job.split.parts[0].note) == (
        PartState.RETRYING,
        "render-a was lost",
    )
    await place(store, 0, attempt=2, instance="render-b")
    for stale in (
        store.part_done("job1", index=0, render_id="job1-p1", output_path="/old.mp4"),
        store.part_retry("job1", index=0, render_id="job1-p1", note="late", stage="x"),
    ):
        with pytest.raises(TransitionRejected, match="rendered by job1-p1-a2"):
            await stale


async def test_the_join_is_placed_like_a_part(store: JobStore) -> None:
    await new_job(store)
    await store.plan_split("job1", split=PLAN)
    await place(store, JOIN_INDEX, instance="render-b")
    job = await store.get("job1")
    assert job.split is not None
    assert (job.split.join.render_id, job.split.join.state) == ("job1-join", PartState.RENDERING)
    assert job.split_frames == (0, 0, 0)


async def test_part_frames_ride_on_the_progress_write(store: JobStore) -> None:
    await new_job(store)
    await store.plan_split("job1", split=PLAN)
    before = await store.get("job1")
    update = ProgressUpdate("job1", 30.0, "Rendering", 4.0, 0, split_frames=(12, 20, 3))
    (written,) = await store.record_progress_batch([update])
    assert not isinstance(written, Exception)
    assert written.version == before.version + 1 and written.split_frames == (12, 20, 3)
    # A progress write of a job that is not split leaves the frames alone.
    written = await store.record_progress(
        "job1", progress=31, stage="Rendering", eta_seconds=3, render_seq=0
    )
    assert written.split_frames == (12, 20, 3)


async def test_part_changes_are_fenced_and_in_the_history(store: JobStore) -> None:
    await store.create(job_id="job1", request_id="r1", spec=b"s", owner="replica-a")
    held = Lease("replica-a", 1)
    await store.plan_split("job1", split=PLAN, lease=held)
    await store.place_part(
        "job1",
        index=0,
        part_attempt=1,
        render_id="job1-p1",
        instance_id="render-a",
        address="a:1",
        lease=held,
    )
    await store.part_started("job1", index=0, render_id="job1-p1", lease=held)
    await store.part_done("job1", index=0, render_id="job1-p1", output_path="/p1", lease=held)
    await store.claim_jobs("replica-b", limit=10, take_over=True)
    with pytest.raises(StaleLease):
        await store.place_part(
            "job1",
            index=1,
            part_attempt=1,
            render_id="job1-p2",
            instance_id="render-a",
            address="a:1",
            lease=held,
        )
    history = await store.history("job1")
    assert [entry.change for entry in history] == [
        Change.CREATE,
        Change.SPLIT_PLANNED,
        Change.PART_PLACED,
        Change.PART_STARTED,
        Change.PART_DONE,
    ]


async def test_the_api_shows_each_part_and_the_join(store: JobStore) -> None:
    spec = spec_pb2.RenderSpec(
        source=spec_pb2.Source(test_pattern=spec_pb2.TestPattern(duration_seconds=3))
    )
    await store.create(job_id="job1", request_id="r1", spec=spec.SerializeToString())
    await store.plan_split("job1", split=PLAN)
    await place(store, 0)
    await place(store, 1, instance="render-b")
    await store.part_done("job1", index=1, render_id="job1-p2", output_path="/p2.mp4")
    update = ProgressUpdate("job1", 40.0, "Rendering", 4.0, 0, split_frames=(12, 30, 0))
    await store.record_progress_batch([update])
    shown = job_to_api_json(await store.get("job1"))
    assert [
        (part["index"], part["join"], part["state"], part["framesDone"], part["renderId"])
        for part in shown["parts"]
    ] == [
        (0, False, "rendering", 12, "job1-p1"),
        (1, False, "done", 30, "job1-p2"),
        (2, False, "pending", 0, None),
        (3, True, "pending", 0, None),
    ]
    assert shown["parts"][1]["renderService"] == {
        "instanceId": "render-b",
        "address": "render-b.example:50051",
    }
    assert shown["splitReason"] is None
    # Placed and waiting for a slot on its render service: queued, until its start is recorded.
    await place(store, 2)
    shown = job_to_api_json(await store.get("job1"))
    assert shown["parts"][2]["state"] == "queued"
    await store.part_started("job1", index=2, render_id="job1-p3")
    shown = job_to_api_json(await store.get("job1"))
    assert (shown["parts"][2]["state"], shown["parts"][2]["framesDone"]) == ("rendering", 0)
