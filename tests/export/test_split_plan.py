"""The split planner, without I/O: generated specs, sources and pools hold the plan's
invariants (the parts cover the output's frames exactly once, as evenly as possible, within the
policy), and each rule that renders a job whole or refuses a request is checked by name."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_service.split_plan import (
    LAST_PART_VIDEO_SECONDS,
    PARTS_FIELD,
    Plan,
    PlannedPart,
    SourceFacts,
    SplitPolicy,
    Whole,
    WholeCause,
    audio_spec,
    check_split_request,
    even_parts,
    join_spec,
    part_spec,
    plan_split,
    source_facts,
    total_frames,
    video_frames,
)
from export_service.store.split_record import planned, split_from_json
from export_service.tracking.split_runner import plan_of
from videojob.errors import InvalidArgument
from videojob.render.v1 import render_pb2, spec_pb2
from videojob.spec_validation import normalize_spec

POLICY = SplitPolicy(min_seconds=60.0, max_parts=8, part_seconds=30.0)
TWO_FREE = (1, 1)


def transcode(
    codec: str = "", container: str = "mp4", parts: int = 0, fps: float = 0
) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec(
        source=spec_pb2.Source(transcode=spec_pb2.Transcode(input_path="in.mov")),
        output=spec_pb2.OutputSpec(
            container=container, video_codec=codec, fps=fps, split=spec_pb2.Split(parts=parts)
        ),
    )
    return normalize_spec(spec)


def pattern_spec(seconds: float, parts: int = 0, fps: float = 30.0) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec(
        source=spec_pb2.Source(
            test_pattern=spec_pb2.TestPattern(duration_seconds=seconds, fps=fps)
        ),
        output=spec_pb2.OutputSpec(split=spec_pb2.Split(parts=parts)),
    )
    return normalize_spec(spec)


def slideshow(subtitles: str = "", parts: int = 0) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec(
        source=spec_pb2.Source(
            slideshow=spec_pb2.Slideshow(
                slides=[spec_pb2.Slide(image_path="a.png", duration_seconds=600)],
                subtitles_path=subtitles,
            )
        ),
        output=spec_pb2.OutputSpec(split=spec_pb2.Split(parts=parts)),
    )
    return normalize_spec(spec)


LONG = SourceFacts(duration_seconds=600.0, fps=30.0, has_audio=True, video_seconds=600.0)


def assert_covers_exactly(plan: Plan) -> None:
    assert sum(part.frame_count for part in plan.parts) == plan.total_frames
    first = 0
    for index, part in enumerate(plan.parts):
        assert (part.index, part.first_frame) == (index, first)
        assert part.frame_count >= 1
        first += part.frame_count
    counts = [part.frame_count for part in plan.parts]
    if plan.pad_frames:
        # The frames past the video's end are all the last part's, which holds at least
        # LAST_PART_VIDEO_SECONDS of the video; the parts before it are as even as possible.
        last = plan.parts[-1]
        video = plan.total_frames - plan.pad_frames
        margin = max(1, math.ceil(plan.fps * LAST_PART_VIDEO_SECONDS - 1e-6))
        assert last.first_frame <= video - margin
        counts = counts[:-1]
    assert max(counts) - min(counts) <= 1
    assert counts == sorted(counts, reverse=True)


@given(
    duration=st.floats(min_value=0.1, max_value=4 * 3600.0),
    fps=st.floats(min_value=1.0, max_value=240.0),
    free_slots=st.lists(st.integers(min_value=0, max_value=8), max_size=6),
    parts=st.sampled_from([0, 0, 0, 2, 3, 8]),
    min_seconds=st.floats(min_value=0.0, max_value=600.0),
    part_seconds=st.floats(min_value=1.0, max_value=600.0),
    max_parts=st.integers(min_value=2, max_value=64),
    video_share=st.one_of(st.just(1.0), st.floats(min_value=0.01, max_value=1.0)),
)
def test_a_plan_covers_the_outputs_frames_exactly_once_within_the_policy(
    duration: float,
    fps: float,
    free_slots: list[int],
    parts: int,
    min_seconds: float,
    part_seconds: float,
    max_parts: int,
    video_share: float,
) -> None:
    policy = SplitPolicy(min_seconds=min_seconds, max_parts=max_parts, part_seconds=part_seconds)
    facts = SourceFacts(duration_seconds=duration, fps=fps, video_seconds=duration * video_share)
    spec = transcode(parts=parts)
    verdict = plan_split(spec, facts, policy, free_slots)
    if isinstance(verdict, Whole):
        assert verdict.reason and verdict.shown.startswith("rendered whole: ")
        return
    assert verdict.fps == fps
    assert verdict.total_frames == total_frames(spec, facts)
    assert verdict.pad_frames == verdict.total_frames - video_frames(spec, facts)
    for index in range(len(verdict.parts)):
        pad = part_spec(spec, verdict, index).part.pad_frames
        assert pad == (verdict.pad_frames if index == len(verdict.parts) - 1 else 0)
    assert abs(verdict.total_frames - duration * fps) <= 0.5 + 1e-6
    assert_covers_exactly(verdict)
    assert 2 <= len(verdict.parts) <= max_parts
    if parts:
        assert len(verdict.parts) == min(parts, max_parts)
    else:
        assert duration >= min_seconds
        assert len(free_slots) >= 2
        assert len(verdict.parts) <= sum(free_slots)


@given(total=st.integers(min_value=1, max_value=10**7), count=st.integers(1, 64))
def test_even_parts_differ_by_at_most_one_frame(total: int, count: int) -> None:
    if count > total:
        with pytest.raises(ValueError):
            even_parts(total, count)
        return
    parts = even_parts(total, count)
    assert len(parts) == count
    assert_covers_exactly(Plan(parts, total, 30.0))


def test_the_timeline_is_the_outputs_frame_rate_when_set() -> None:
    facts = SourceFacts(duration_seconds=120.0, fps=29.97, video_seconds=120.0)
    plan = plan_split(transcode(fps=24.0, parts=3), facts, POLICY, TWO_FREE)
    assert plan == Plan(
        (PlannedPart(0, 0, 960), PlannedPart(1, 960, 960), PlannedPart(2, 1920, 960)), 2880, 24.0
    )
    whole_source = plan_split(transcode(parts=2), facts, POLICY, TWO_FREE)
    assert isinstance(whole_source, Plan)
    # 120 s at 29.97 fps: 3596.4 frames, rounded to the nearest.
    assert (whole_source.total_frames, whole_source.fps) == (3596, 29.97)
    assert [part.frame_count for part in whole_source.parts] == [1798, 1798]


def test_a_test_pattern_is_planned_from_its_spec() -> None:
    spec = pattern_spec(seconds=2.0, parts=3)
    facts = source_facts(spec, None)
    assert facts == SourceFacts(2.0, 30.0, has_audio=True, video_seconds=2.0)
    plan = plan_split(spec, facts, POLICY, ())
    assert plan == Plan(
        (PlannedPart(0, 0, 20), PlannedPart(1, 20, 20), PlannedPart(2, 40, 20)), 60, 30.0
    )


def test_a_render_services_answer_gives_a_transcodes_facts() -> None:
    answer = render_pb2.CheckInputsResponse(
        duration_seconds=12.5,
        fps=25.0,
        variable_frame_rate=True,
        has_audio=True,
        video_duration_seconds=10.5,
    )
    assert source_facts(transcode(), answer) == SourceFacts(12.5, 25.0, True, True, 10.5)
    assert source_facts(transcode(), None) is None


@pytest.mark.parametrize(
    ("free_slots", "cause", "reason"),
    [
        ((4,), WholeCause.ONE_SERVICE, "a pool of one render service"),
        ((), WholeCause.ONE_SERVICE, "a pool of one render service"),
        ((1, 0), WholeCause.NO_SLOTS, "one render slot free"),
        ((0, 0, 0), WholeCause.NO_SLOTS, "no render slot free"),
    ],
)
def test_the_policy_splits_only_with_more_than_one_slot_free_across_a_pool(
    free_slots: tuple[int, ...], cause: WholeCause, reason: str
) -> None:
    assert plan_split(transcode(), LONG, POLICY, free_slots) == Whole(cause, reason)


def test_the_policy_cuts_about_a_part_length_each_up_to_the_free_slots_and_max_parts() -> None:
    def count(duration: float, free_slots: tuple[int, ...]) -> int:
        verdict = plan_split(
            transcode(), SourceFacts(duration, 30.0, video_seconds=duration), POLICY, free_slots
        )
        assert isinstance(verdict, Plan)
        return len(verdict.parts)

    assert count(60.0, (1, 1)) == 2
    assert count(119.0, (4, 4)) == 3
    assert count(120.0, (4, 4)) == 4
    assert count(600.0, (1, 1, 1)) == 3
    assert count(600.0, (8, 8)) == POLICY.max_parts


def test_a_short_output_renders_whole_under_the_policy() -> None:
    verdict = plan_split(transcode(), SourceFacts(59.0, 30.0, video_seconds=59.0), POLICY, (4, 4))
    assert verdict == Whole(
        WholeCause.TOO_SHORT, "too short to gain (59 s; the policy splits from 60 s)"
    )
    assert verdict.shown.startswith("rendered whole: too short to gain")


def test_an_explicit_count_ignores_the_slots_and_the_length_but_not_max_parts() -> None:
    short = SourceFacts(1.0, 30.0, video_seconds=1.0)
    assert len(_plan(transcode(parts=3), short, (0,)).parts) == 3
    assert len(_plan(transcode(parts=20), LONG, (1, 1)).parts) == POLICY.max_parts
    assert plan_split(
        transcode(parts=4), SourceFacts(0.1, 30.0, video_seconds=0.1), POLICY, ()
    ) == Whole(WholeCause.TOO_SHORT, "too short to gain (3 frames)")


def _plan(spec: spec_pb2.RenderSpec, facts: SourceFacts, free_slots: tuple[int, ...]) -> Plan:
    verdict = plan_split(spec, facts, POLICY, free_slots)
    assert isinstance(verdict, Plan), verdict
    return verdict


def test_parts_one_never_splits() -> None:
    assert plan_split(transcode(parts=1), LONG, POLICY, (8, 8)) == Whole(
        WholeCause.SPLIT_OFF, "split off (parts = 1)"
    )


UNSPLITTABLE = [
    (
        transcode(),
        SourceFacts(600.0, 30.0, variable_frame_rate=True),
        "the source has a variable frame rate",
    ),
    (transcode(), SourceFacts(0.0, 30.0, video_seconds=0.0), "the source's duration is unknown"),
    (transcode(), SourceFacts(600.0, 0.0), "the source's frame rate is unknown"),
    (transcode(), None, "the source's duration and frame rate are unknown"),
    (transcode(), SourceFacts(600.0, 30.0), "the length of the source's video is unknown"),
    (
        slideshow(subtitles="s.srt"),
        LONG,
        "a slideshow with burned-in subtitles is timed on the whole output's clock",
    ),
    (slideshow(), LONG, "a slideshow's frames come from one filter graph from its first slide on"),
    (transcode("hevc"), LONG, "hevc parts are not joined (only h264 and vp9 are)"),
    (transcode("av1", "webm"), LONG, "av1 parts are not joined (only h264 and vp9 are)"),
]


@pytest.mark.parametrize(("spec", "facts", "reason"), UNSPLITTABLE)
def test_what_cant_be_split_safely_renders_whole_and_says_why(
    spec: spec_pb2.RenderSpec, facts: SourceFacts | None, reason: str
) -> None:
    for parts in (0, 3):
        spec.output.split.parts = parts
        assert plan_split(spec, facts, POLICY, (4, 4)) == Whole(WholeCause.UNSPLITTABLE, reason)


@pytest.mark.parametrize(("spec", "facts", "reason"), UNSPLITTABLE)
def test_an_explicit_split_of_what_cant_be_split_is_refused_naming_the_field(
    spec: spec_pb2.RenderSpec, facts: SourceFacts | None, reason: str
) -> None:
    spec.output.split.parts = 2
    if facts is not None:
        with pytest.raises(InvalidArgument) as refused:
            check_split_request(spec, POLICY, facts)
        assert refused.value.field == PARTS_FIELD
        assert reason in refused.value.message
    for parts in (0, 1):
        spec.output.split.parts = parts
        check_split_request(spec, POLICY, facts)


def test_the_spec_alone_refuses_what_its_kind_or_codec_cant_split_before_any_facts() -> None:
    for spec in (slideshow(parts=2), transcode("hevc", parts=2)):
        with pytest.raises(InvalidArgument) as refused:
            check_split_request(spec, POLICY)
        assert refused.value.field == PARTS_FIELD
    # A transcode's source is checked once its facts are known.
    check_split_request(transcode(parts=2), POLICY)


@pytest.mark.parametrize(
    ("spec", "facts"),
    [
        (transcode("h264", "mp4", parts=4), LONG),
        (transcode("vp9", "webm", parts=4), LONG),
        (
            pattern_spec(seconds=0.2, parts=6),
            SourceFacts(0.2, 30.0, has_audio=True, video_seconds=0.2),
        ),
    ],
)
def test_transcodes_and_test_patterns_in_h264_and_vp9_may_ask_for_parts(
    spec: spec_pb2.RenderSpec, facts: SourceFacts
) -> None:
    check_split_request(spec, POLICY, facts)
    assert isinstance(plan_split(spec, facts, POLICY, ()), Plan)


def test_more_parts_than_the_policys_max_is_refused() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_split_request(transcode(parts=POLICY.max_parts + 1), POLICY, LONG)
    assert refused.value.field == PARTS_FIELD
    assert f"at most {POLICY.max_parts}" in refused.value.message
    check_split_request(transcode(parts=POLICY.max_parts), POLICY, LONG)


def test_more_parts_than_frames_is_refused() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_split_request(
            pattern_spec(seconds=0.1, parts=4), POLICY, SourceFacts(0.1, 30.0, video_seconds=0.1)
        )
    assert refused.value.field == PARTS_FIELD
    assert "3 frames" in refused.value.message


@pytest.mark.parametrize("kind", ["part", "join", "audio"])
def test_a_client_set_internal_kind_is_refused_naming_it(kind: str) -> None:
    spec = pattern_spec(seconds=2.0)
    if kind == "part":
        spec.part.frame_count = 1
    elif kind == "join":
        spec.join.part_paths.append("a.mp4")
    else:
        spec.audio.total_frames = 60
    with pytest.raises(InvalidArgument) as refused:
        check_split_request(spec, POLICY)
    assert refused.value.field == f"spec.{kind}"


def test_part_and_join_specs_carry_the_plan() -> None:
    spec = pattern_spec(seconds=2.0, parts=2)
    plan = _plan(spec, SourceFacts(2.0, 30.0, video_seconds=2.0), ())
    second = part_spec(spec, plan, 1)
    assert second.part == spec_pb2.SplitPart(
        index=1, count=2, first_frame=30, frame_count=30, total_frames=60, fps=30.0
    )
    assert (second.source, second.output) == (spec.source, spec.output)
    assert not spec.HasField("part")
    joined = join_spec(spec, plan, ["out/a.mp4", "s3://b/out/b.mp4"])
    assert joined.join == spec_pb2.SplitJoin(
        part_paths=["out/a.mp4", "s3://b/out/b.mp4"], total_frames=60, fps=30.0
    )
    assert joined.WhichOneof("internal") == "join"
    with pytest.raises(ValueError):
        join_spec(spec, plan, ["out/a.mp4"])
    audio = audio_spec(spec, plan)
    assert audio.audio == spec_pb2.SplitAudio(total_frames=60, fps=30.0)
    assert (audio.source, audio.output) == (spec.source, spec.output)
    muxing = join_spec(spec, plan, ["out/a.mp4", "out/b.mp4"], audio_path="out/sound.mp4")
    assert muxing.join.audio_path == "out/sound.mp4"
    # A part's, the audio's or the join's spec is never planned again.
    for internal in (second, audio, muxing):
        assert plan_split(internal, SourceFacts(2.0, 30.0, video_seconds=2.0), POLICY, ()) == Whole(
            WholeCause.UNSPLITTABLE, "it is itself a render of a split job (a part, audio, join)"
        )


# A transcode whose audio (6 s) outlasts its video (4 s) at 25 fps: a whole render lasts 6 s,
# its video track ending at 4 s.
AUDIO_LONGER = SourceFacts(6.0, 25.0, has_audio=True, video_seconds=4.0)


def test_the_frames_past_the_videos_end_are_the_last_parts_to_repeat() -> None:
    spec = transcode(parts=2)
    plan = _plan(spec, AUDIO_LONGER, ())
    # The even cut: the last part starts well within the video (frame 75 of its 100).
    assert plan == Plan((PlannedPart(0, 0, 75), PlannedPart(1, 75, 75)), 150, 25.0, 50)
    assert [part_spec(spec, plan, i).part.pad_frames for i in range(2)] == [0, 50]
    assert_covers_exactly(plan)


def test_the_last_part_starts_before_the_videos_end_when_the_even_cut_would_not() -> None:
    # Three even parts would put the last one at frame 100, the video's end: it would have no
    # source frame to repeat. It starts half a second (13 frames) before, the others even.
    plan = _plan(transcode(parts=3), AUDIO_LONGER, ())
    assert plan == Plan(
        (PlannedPart(0, 0, 44), PlannedPart(1, 44, 43), PlannedPart(2, 87, 63)), 150, 25.0, 50
    )
    assert_covers_exactly(plan)


def test_a_video_longer_than_its_audio_is_cut_evenly_without_padding() -> None:
    # The container lasts as long as the video; the audio render pads the audio with silence.
    facts = SourceFacts(6.0, 25.0, has_audio=True, video_seconds=6.0)
    plan = _plan(transcode(parts=3), facts, ())
    assert plan == Plan(even_parts(150, 3), 150, 25.0, 0)
    assert_covers_exactly(plan)


def test_a_video_too_short_for_the_parts_renders_whole_and_an_explicit_count_is_refused() -> None:
    facts = SourceFacts(120.0, 30.0, has_audio=True, video_seconds=0.5)
    assert plan_split(transcode(), facts, POLICY, (4, 4)) == Whole(
        WholeCause.TOO_SHORT, "its video is too short to cut (15 frames)"
    )
    with pytest.raises(InvalidArgument) as refused:
        check_split_request(transcode(parts=2), POLICY, facts)
    assert refused.value.field == PARTS_FIELD
    assert "fills 15 of the output's 3600 frames" in refused.value.message
    check_split_request(transcode(parts=2), POLICY, AUDIO_LONGER)


def test_the_recorded_plan_keeps_the_frames_past_the_videos_end() -> None:
    plan = _plan(transcode(parts=3), AUDIO_LONGER, ())
    split = planned(
        plan.total_frames,
        tuple((part.first_frame, part.frame_count) for part in plan.parts),
        plan.fps,
        audio=True,
        pad_frames=plan.pad_frames,
    )
    loaded = split_from_json(split.to_json())
    assert loaded is not None and plan_of(loaded) == plan
    with pytest.raises(ValueError):
        planned(150, ((0, 100), (100, 50)), 25.0, pad_frames=50)
