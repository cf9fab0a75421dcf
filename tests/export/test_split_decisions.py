"""The pure decisions of a split job's tracking (export_service.tracking.split), without I/O:
its Rendering band from the frames finished across all parts (held while a part renders
again, and saying so), the ETA from the aggregate rate, when the join starts, what an ended
part render means, and what a terminal job leaves to stop and remove."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from export_service.store.split_record import (
    AUDIO_INDEX,
    JOIN_INDEX,
    PartRecord,
    PartState,
    SplitRecord,
    part_render_id,
    planned,
    split_from_json,
)
from export_service.tracking.split import (
    AggregateRate,
    FailJob,
    PartEnded,
    RetryPart,
    after_part_ended,
    frames_finished,
    join_due,
    part_frames,
    part_outputs,
    rendering_progress,
    rendering_stage,
    renders_to_cancel,
)
from videojob.limits import FAILURE_FFMPEG_ERROR, FAILURE_INVALID_INPUT, FAILURE_RENDER_LOST

PLAN = planned(300, ((0, 100), (100, 100), (200, 100)))


def with_parts(split: SplitRecord, **states: tuple[PartState, int]) -> SplitRecord:
    """``p1=(state, attempts)``: each named part (1-based) in that state after that many
    attempts, with a render id once placed."""
    for name, (state, attempts) in states.items():
        split = split.with_render(int(name[1:]) - 1, _as(state, attempts))
    return split


def _as(state: PartState, attempts: int) -> Callable[[PartRecord], PartRecord]:
    def change(part: PartRecord) -> PartRecord:
        done = state is PartState.DONE
        return replace(
            part,
            state=state,
            attempts=attempts,
            render_id=f"job-p{part.index + 1}-a{attempts}" if attempts else "",
            frames_done=part.frame_count if done else 0,
            output_path=f"/out/job-p{part.index + 1}.mp4" if done else "",
        )

    return change


RENDERING = (PartState.RENDERING, 1)
DONE = (PartState.DONE, 1)


def test_the_band_is_the_frames_finished_across_parts_over_the_total() -> None:
    split = with_parts(PLAN, p1=DONE, p2=RENDERING, p3=RENDERING)
    assert frames_finished(split, (100, 50, 0)) == 150
    assert rendering_progress(split, (100, 50, 0), held=0) == pytest.approx(2 + 93 * 0.5)
    assert rendering_progress(PLAN, (), held=0) == 2.0
    # A frame count past a part's own is the part's, never more.
    every = with_parts(PLAN, p1=RENDERING, p2=RENDERING, p3=RENDERING)
    assert rendering_progress(every, (500, 100, 100), held=0) == 95.0


def test_the_band_holds_its_maximum_while_a_part_renders_again() -> None:
    split = with_parts(PLAN, p1=DONE, p2=RENDERING, p3=RENDERING)
    before = rendering_progress(split, (100, 90, 90), held=0)
    again = with_parts(split, p2=(PartState.RENDERING, 2))
    after = rendering_progress(again, (100, 5, 91), held=before)
    assert after == before
    assert rendering_stage(again) == "Part 2 retrying"
    assert rendering_stage(with_parts(again, p3=(PartState.RETRYING, 1))) == "Parts 2, 3 retrying"
    assert rendering_stage(split) == "Rendering"


def test_the_eta_comes_from_the_aggregate_rate() -> None:
    rate = AggregateRate(since=10.0, frames_then=0)
    assert rate.eta_seconds(0, 300, now=10.0) == 0.0  # nothing seen yet: unknown
    # 60 frames in 2 s across parts: 30 frames/s, 240 frames left.
    assert rate.eta_seconds(60, 300, now=12.0) == pytest.approx(8.0)
    rate = rate.observed(60, now=12.0)
    assert rate.observed(70, now=13.0).since == 10.0
    fresh = rate.observed(40, now=13.0)  # a part lost frames: measured afresh
    assert (fresh.since, fresh.frames_then) == (13.0, 40)
    assert fresh.eta_seconds(40, 300, now=13.0) == 0.0


def test_the_join_starts_once_every_part_is_done() -> None:
    assert not join_due(with_parts(PLAN, p1=DONE, p2=DONE, p3=RENDERING))
    every = with_parts(PLAN, p1=DONE, p2=DONE, p3=DONE)
    assert join_due(every)
    assert not join_due(
        every.with_render(JOIN_INDEX, lambda j: replace(j, state=PartState.RENDERING))
    )


def test_a_lost_part_renders_again_elsewhere_within_its_budget() -> None:
    split = with_parts(PLAN, p1=DONE, p2=RENDERING, p3=RENDERING)
    lost = PartEnded(FAILURE_RENDER_LOST, "render-b stopped answering", service_lost=True)
    decided = after_part_ended(split, split.parts[1], lost, max_attempts=3)
    assert decided == RetryPart(
        attempt=2, elsewhere=True, note="render-b stopped answering", stage="Part 2 retrying"
    )
    # Lost without its render service (it restarted and forgot the render): placed by load.
    forgot = PartEnded(FAILURE_RENDER_LOST, "the render service does not know the render")
    assert not after_part_ended(split, split.parts[1], forgot, max_attempts=3).elsewhere  # type: ignore[union-attr]


def test_a_part_that_fails_for_good_fails_the_job_naming_it_and_ffmpegs_reason() -> None:
    split = with_parts(PLAN, p1=DONE, p2=RENDERING, p3=(PartState.RENDERING, 3))
    failed = PartEnded(FAILURE_FFMPEG_ERROR, "ffmpeg exited with status 1", log_tail="x\ny")
    decided = after_part_ended(split, split.parts[2], failed, max_attempts=3)
    assert decided == FailJob(
        FAILURE_FFMPEG_ERROR,
        "part 3 of 3 failed (after 3 attempts): ffmpeg exited with status 1",
        "x\ny",
    )
    # Within the budget: once more, on another render service.
    retried = after_part_ended(split, split.parts[1], failed, max_attempts=3)
    assert isinstance(retried, RetryPart) and retried.elsewhere and retried.attempt == 2
    # A spec the render refused fails at once.
    refused = PartEnded(FAILURE_INVALID_INPUT, "spec.output.split: bad")
    decided = after_part_ended(split, split.parts[1], refused, max_attempts=3)
    assert decided == FailJob(FAILURE_INVALID_INPUT, "part 2 of 3 failed: spec.output.split: bad")
    join = split.join
    assert after_part_ended(split, replace(join, attempts=3), failed, 3) == FailJob(
        FAILURE_FFMPEG_ERROR,
        "the join of the parts failed (after 3 attempts): ffmpeg exited with status 1",
        "x\ny",
    )


def test_a_terminal_job_leaves_every_running_render_to_cancel_and_every_part_output_to_remove() -> (
    None
):
    split = with_parts(PLAN, p1=DONE, p2=RENDERING, p3=(PartState.RETRYING, 1))
    assert [part.render_id for part in renders_to_cancel(split)] == ["job-p2-a1", "job-p3-a1"]
    assert part_outputs(split) == ("/out/job-p1.mp4",)
    assert renders_to_cancel(PLAN) == ()  # nothing placed: nothing to cancel


def test_the_audio_beside_the_parts_is_awaited_by_the_join_and_removed_with_them() -> None:
    split = planned(300, ((0, 150), (150, 150)), fps=25.0, audio=True)
    assert split.audio is not None and split.renders[-2] is split.audio
    split = with_parts(split, p1=DONE, p2=DONE)
    assert not join_due(split)  # the audio is not done yet
    done = split.with_render(
        AUDIO_INDEX,
        lambda audio: replace(audio, state=PartState.DONE, output_path="/out/job-audio.mp4"),
    )
    assert join_due(done)
    assert part_outputs(done) == ("/out/job-p1.mp4", "/out/job-p2.mp4", "/out/job-audio.mp4")
    assert rendering_progress(done, (), held=0) == 95.0  # the audio adds no frames
    lost = PartEnded(FAILURE_RENDER_LOST, "render-a stopped answering", service_lost=True)
    audio = replace(split.render(AUDIO_INDEX), attempts=1, render_id="job-audio")
    retried = after_part_ended(split, audio, lost, max_attempts=3)
    assert isinstance(retried, RetryPart) and retried.stage == "Audio retrying"
    failed = after_part_ended(split, replace(audio, attempts=3), lost, max_attempts=3)
    assert isinstance(failed, FailJob)
    assert failed.message.startswith("the output's audio failed (after 3 attempts)")
    assert part_render_id("job", AUDIO_INDEX, 1) == "job-audio"
    assert split_from_json(done.to_json()) == done


def test_a_part_s_frames_never_fall_within_its_render() -> None:
    """Before a trimmed part's ffmpeg reaches its first frame it reports frame 0 at the
    Preparing end (2 %): that is no frame of the part, so its frames do not go 3 -> 1 when the
    first real frame count comes (150 frames: 2 % of them would be 3)."""
    assert part_frames(0, 2.0, 150, before=0) == 0
    assert part_frames(1, 3.0, 150, before=0) == 1
    assert part_frames(0, 48.5, 150, before=0) == 75  # no frame reported: the Rendering band
    assert part_frames(0, 95.0, 150, before=0) == 150
    assert part_frames(0, 99.0, 150, before=10) == 150
    assert part_frames(5, 10.0, 150, before=9) == 9  # one render's frames never fall
    assert part_frames(400, 90.0, 150, before=0) == 150
