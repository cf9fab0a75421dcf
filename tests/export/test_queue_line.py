"""Where a waiting job stands (export_service.queue_line.QueueView), without I/O: the jobs, the
render services' slots and the time are inputs. A line is per render service, in the order the
jobs were placed on it, whichever replica placed them; the estimate is absent wherever it would
need a number nobody has; and the place as GetExport shows it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from export_service.job_proto import job_to_proto
from export_service.queue_line import QueuePlace, QueueView, waits_for_slot
from export_service.store import Job, JobStatus
from export_service.store.base import (
    STAGE_QUEUED,
    STAGE_WAITING_FOR_RENDER,
    RenderAttempt,
)
from export_service.store.split_record import (
    JOIN_INDEX,
    PartRecord,
    PartState,
    SplitRecord,
    planned,
)
from tests.support.specs import pattern_spec

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SLOTS = {"render-a": 2, "render-b": 1}


def slots_of(instance_id: str, address: str) -> int | None:
    return SLOTS.get(instance_id)


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def job(
    job_id: str,
    on: str | None = "render-a",
    placed: float = -60.0,
    status: JobStatus = JobStatus.QUEUED,
    stage: str = STAGE_QUEUED,
    eta: float = 0.0,
    started: float | None = None,
    finished: float | None = None,
    owner: str = "replica-1",
) -> Job:
    attempts = (
        () if on is None else (RenderAttempt(1, job_id, on, f"{on}:50051", started_at=at(placed)),)
    )
    return Job(
        id=job_id,
        request_id=job_id,
        status=status,
        progress=0.0 if status is JobStatus.QUEUED else 40.0,
        stage=stage,
        output_path="",
        error_code="",
        error_message="",
        error_field="",
        attempt=1,
        version=3,
        spec=pattern_spec().SerializeToString(),
        created_at=at(placed),
        updated_at=NOW,
        started_at=None if started is None else at(started),
        finished_at=None if finished is None else at(finished),
        last_render_seq=0,
        eta_seconds=eta,
        output_size_bytes=0,
        output_duration_seconds=0.0,
        cancel_requested=False,
        owner=owner,
        lease_epoch=1,
        attempts=attempts,
    )


def split_job(job_id: str, *renders: tuple[int, str, float, bool], created: float = -300.0) -> Job:
    """A split job of three parts whose renders ``(index, render service, placed, waiting for
    a slot)`` are placed (JOIN_INDEX: its join). Like every job it has an attempt (on
    render-a), which places no render of its own."""
    split: SplitRecord = planned(300, ((0, 100), (100, 100), (200, 100)))
    for index, on, placed, waiting in renders:
        placed_render = replace(
            split.render(index),
            state=PartState.RENDERING,
            render_id=f"{job_id}-{index}",
            instance_id=on,
            address=f"{on}:50051",
            placed_at=at(placed).timestamp(),
            waiting_for_slot=waiting,
        )

        def placed_as(_part: PartRecord, placed_render: PartRecord = placed_render) -> PartRecord:
            return placed_render

        split = split.with_render(index, placed_as)
    return replace(
        job(job_id, placed=created, status=JobStatus.RUNNING, stage="Rendering"),
        split=split,
    )


def running(job_id: str, on: str = "render-a", eta: float = 0.0, started: float = -30.0) -> Job:
    return job(job_id, on, status=JobStatus.RUNNING, stage="Rendering", eta=eta, started=started)


def completed(job_id: str, on: str, run_time: float) -> Job:
    return job(
        job_id,
        on,
        placed=-600.0,
        status=JobStatus.COMPLETED,
        stage="Complete",
        started=-500.0,
        finished=-500.0 + run_time,
    )


def test_each_render_service_has_its_own_line_in_placement_order() -> None:
    # Placed by two replicas; b2 was created first but placed on render-b later than b1.
    waiting = [
        job("a2", "render-a", placed=-20, owner="replica-2"),
        job("b2", "render-b", placed=-5),
        job("a1", "render-a", placed=-40),
        replace(job("b1", "render-b", placed=-10, owner="replica-2"), created_at=at(-1)),
        job("a3", "render-a", placed=-10),
    ]
    view = QueueView(waiting, [], slots_of, NOW)
    positions = {item.id: place.position for item in waiting if (place := view.place_of(item))}
    assert positions == {"a1": 1, "a2": 2, "a3": 3, "b1": 1, "b2": 2}


def test_free_slots_start_the_first_in_line_now() -> None:
    view = QueueView([job("a1"), running("r1", eta=90)], [], slots_of, NOW)
    # render-a has two slots and runs one render: a1 starts now.
    assert view.place_of(job("a1")) == QueuePlace(1, NOW)


def test_the_estimate_follows_the_running_etas_then_the_mean_run_time() -> None:
    active = [
        running("r1", eta=100),
        running("r2", eta=40),
        job("a1", placed=-30),
        job("a2", placed=-20),
        job("a3", placed=-10),
    ]
    done = [
        completed("c1", "render-a", 50),
        completed("c2", "render-a", 70),
        completed("x", "render-b", 999),
    ]
    view = QueueView(active, done, slots_of, NOW)
    # Slots free at 40 and 100; the mean run time there is 60 (render-b's job does not count).
    assert view.place_of(active[2]) == QueuePlace(1, at(40))
    assert view.place_of(active[3]) == QueuePlace(2, at(100))
    assert view.place_of(active[4]) == QueuePlace(3, at(100))


def test_an_eta_counts_from_when_it_was_written() -> None:
    written_earlier = replace(running("r1", on="render-b", eta=50), updated_at=at(-20))
    view = QueueView([written_earlier, job("b1", "render-b")], [], slots_of, NOW)
    assert view.place_of(job("b1", "render-b")) == QueuePlace(1, at(30))


def test_no_estimate_where_it_would_be_invented() -> None:
    first, second = job("b1", "render-b", placed=-20), job("b2", "render-b", placed=-10)
    # Jobs ahead and nothing completed there: the place, no estimate.
    view = QueueView([running("r", "render-b", eta=30), first, second], [], slots_of, NOW)
    assert view.place_of(second) == QueuePlace(2, None)
    # A running render without an ETA and nothing completed there.
    view = QueueView([running("r", "render-b"), first], [], slots_of, NOW)
    assert view.place_of(first) == QueuePlace(1, None)
    # ... but with a mean run time it leaves what the mean leaves of it.
    view = QueueView(
        [running("r", "render-b", started=-30), first],
        [completed("c", "render-b", 50)],
        slots_of,
        NOW,
    )
    assert view.place_of(first) == QueuePlace(1, at(20))
    # A render service that does not say its slots (or does not answer).
    unknown = job("u1", "render-c")
    assert QueueView([unknown], [], slots_of, NOW).place_of(unknown) == QueuePlace(1, None)
    # A job whose render service does not answer: still in line, no estimate.
    asking = job("b1", "render-b", stage=STAGE_WAITING_FOR_RENDER)
    assert QueueView([asking], [], slots_of, NOW).place_of(asking) == QueuePlace(1, None)


def test_only_jobs_waiting_for_a_slot_have_a_place() -> None:
    unplaced = job("n", on=None)
    resubmitted = job("again", status=JobStatus.RUNNING, stage=STAGE_QUEUED)
    # Running when its render service stopped answering: it holds a slot there, in no line.
    lost = job("lost", "render-b", status=JobStatus.RUNNING, stage=STAGE_WAITING_FOR_RENDER)
    active = [unplaced, resubmitted, lost, running("r", eta=30)]
    view = QueueView(active, [], slots_of, NOW)
    assert [waits_for_slot(item) for item in active] == [True, True, False, False]
    assert view.place_of(unplaced) is None
    assert view.place_of(resubmitted) == QueuePlace(1, NOW)
    assert view.place_of(lost) is None and view.place_of(running("r", eta=30)) is None


def test_getexport_shows_the_place_and_no_estimate_while_nobody_drives_the_job() -> None:
    place = QueuePlace(2, at(90))
    shown = job_to_proto(job("a1"), queue_place=place)
    assert shown.queue_position == 2
    assert shown.estimated_start_at.ToDatetime(tzinfo=UTC) == at(90)
    orphan = job_to_proto(job("a1"), awaiting_owner=True, queue_place=place)
    assert orphan.queue_position == 2 and not orphan.HasField("estimated_start_at")
    assert job_to_proto(job("a1")).queue_position == 0


def test_a_placement_that_named_only_the_address_is_in_that_render_services_line() -> None:
    # Placed while render-a had not said its instance id yet (the tracker's fallback).
    early = job("a0", placed=-90)
    early = replace(early, attempts=(replace(early.attempts[0], instance_id=""),))
    later = job("a1", placed=-30)
    view = QueueView([later, early], [], slots_of, NOW)
    assert view.place_of(early) == QueuePlace(1, NOW)
    assert view.place_of(later) == QueuePlace(2, NOW)


def test_free_slots_need_no_run_time_but_the_job_after_them_does() -> None:
    waiting = [job("a1", placed=-30), job("a2", placed=-20), job("a3", placed=-10)]
    view = QueueView(waiting, [], slots_of, NOW)
    # render-a's two slots are free; who takes the first one after them is unknown.
    assert [view.place_of(item) for item in waiting] == [
        QueuePlace(1, NOW),
        QueuePlace(2, NOW),
        QueuePlace(3, None),
    ]


def test_a_job_placed_after_the_view_joins_the_end_of_its_line() -> None:
    view = QueueView([job("a1", placed=-30), job("a2", placed=-20)], [], slots_of, NOW)
    newer, older = job("a3", placed=-1), job("a0", placed=-99)
    assert view.join(newer) and view.place_of(newer) == QueuePlace(3, None)
    # Placed before jobs the view holds: where it stands needs a new look.
    assert not view.join(older) and view.place_of(older) is None
    assert not view.join(running("r1"))


def test_a_view_disagrees_with_a_job_read_since_that_started_moved_or_waits_again() -> None:
    """What makes a view stale before its age does: the job ahead read as started (the one
    behind it would otherwise still count it), placed in another line, or running again in
    the view but waiting now; a job read as the view holds it, or one it never held, does not."""
    ahead, behind, busy = job("a1", placed=-60), job("a2", placed=-30), running("r1", "render-b")
    view = QueueView([ahead, behind, busy], [], slots_of, NOW)
    assert not view.disagrees(ahead) and not view.disagrees(behind) and not view.disagrees(busy)
    assert not view.disagrees(job("new", placed=0))
    assert view.disagrees(running("a1"))
    assert view.disagrees(job("a1", "render-b", placed=-60))
    assert view.disagrees(replace(busy, stage=STAGE_QUEUED))


def test_a_split_jobs_parts_waiting_on_a_render_service_stand_ahead_of_what_was_placed_after() -> (
    None
):
    # render-b (one slot): part 0 renders, part 1 waits since -50.
    parts = split_job("s", (0, "render-b", -60, False), (1, "render-b", -50, True))
    before, after = job("b1", "render-b", placed=-55), job("b2", "render-b", placed=-40)
    view = QueueView([after, parts, before], [], slots_of, NOW)
    # No estimate: how long the running part holds the slot, nobody can say.
    assert view.place_of(before) == QueuePlace(1, None)
    assert view.place_of(after) == QueuePlace(3, None)
    assert view.place_of(parts) is None, "a split job has no place of its own"
    assert view.place_of(replace(parts, status=JobStatus.QUEUED, stage=STAGE_QUEUED)) is None
    # Parts on another render service are in another line.
    elsewhere = split_job("t", (0, "render-a", -90, True), (JOIN_INDEX, "render-a", -80, True))
    view = QueueView([after, elsewhere], [], slots_of, NOW)
    assert view.place_of(after) == QueuePlace(1, NOW)


def test_a_part_that_started_holds_a_slot_and_one_done_or_of_an_ended_job_nothing() -> None:
    started = split_job("s", (0, "render-b", -60, False))
    waiting = job("b1", "render-b", placed=-30)
    view = QueueView([started, waiting], [], slots_of, NOW)
    assert view.place_of(waiting) == QueuePlace(1, None)
    # Without it, render-b's one slot is free.
    done = replace(
        started,
        split=started.split
        and started.split.with_render(0, lambda part: replace(part, state=PartState.DONE)),
    )
    assert QueueView([done, waiting], [], slots_of, NOW).place_of(waiting) == QueuePlace(1, NOW)
    ended = replace(split_job("s", (0, "render-b", -60, True)), status=JobStatus.CANCELLED)
    assert QueueView([ended, waiting], [], slots_of, NOW).place_of(waiting) == QueuePlace(1, NOW)


def test_a_job_joins_a_line_after_its_waiting_parts_only_when_placed_after_them() -> None:
    view = QueueView([split_job("s", (0, "render-b", -20, True))], [], slots_of, NOW)
    newer, older = job("b1", "render-b", placed=-1), job("b0", "render-b", placed=-99)
    assert view.join(newer) and view.place_of(newer) == QueuePlace(2, None)
    assert not view.join(older)


def test_a_view_disagrees_with_a_split_job_whose_parts_were_placed_or_started_since() -> None:
    seen = split_job("s", (0, "render-b", -60, False), (1, "render-b", -50, True))
    view = QueueView([seen], [], slots_of, NOW)
    assert not view.disagrees(seen)
    assert view.disagrees(split_job("s", (0, "render-b", -60, False), (1, "render-b", -50, False)))
    assert view.disagrees(split_job("s", (0, "render-b", -60, False)))
    # A split job the view never held: only its placed renders would be news.
    assert not view.disagrees(split_job("new"))
    assert view.disagrees(split_job("new", (0, "render-a", -1, True)))
