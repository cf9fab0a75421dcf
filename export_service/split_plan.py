"""Planning a split render: whether a job's output is cut into parts, and where.

Pure, like ``tracking.decide``: no I/O, no clock. The caller gathers the facts (the source as a
render service's CheckInputs answered it, the free render slots of the pool) and gets a verdict.

The API (what the tracker calls, and the create path):

- ``plan_split(spec, facts, policy, free_slots) -> Plan | Whole``, when a job starts (nothing
  rendered yet). ``spec``: the job's normalized RenderSpec (its ``output.split.parts`` is the
  request: 0 the policy decides, 1 never, N >= 2 N parts). ``facts``: its ``SourceFacts``, from
  ``export_service.input_check.planning_facts(stub, spec)`` (the one I/O seam; None: unknown).
  ``policy``: ``ExportConfig.split``. ``free_slots``: the free render slots of each usable
  render service, one entry per service (``RenderPool.free_slots()``; a pool of one never
  splits). A ``Plan`` cuts the output's frame timeline into ``parts`` whose frame counts add up
  exactly to ``total_frames``; a ``Whole`` says why the job renders whole (``Whole.reason``, or
  ``Whole.shown``: "rendered whole: <reason>", for the job to show; ``Whole.cause`` for code).
- ``part_spec(spec, plan, index)``, ``audio_spec(spec, plan)`` and ``join_spec(spec, plan,
  part_paths, audio_path="")``: the RenderSpecs of one part's render, of the whole output's
  audio (for a source with audio; rendered beside the parts) and of the join
  (``RenderSpec.part`` / ``.audio`` / ``.join`` set).
- ``refuse_internal_kinds(spec)`` and ``check_split_request(spec, policy, facts=None)``: the
  create's refusals (InvalidArgument naming ``spec.output.split.parts``, or ``spec.part`` /
  ``spec.audio`` / ``spec.join``) of what a client may not ask. Without facts, what the spec
  alone decides is checked; with them, the source too.

Rules:

- The frame timeline is the output's: its frame rate is ``output.fps`` when set, else the
  source's; ``total_frames`` is the output's duration times that rate, rounded to the nearest
  frame (so the audio, encoded once for the whole duration, and the video differ by at most
  half a frame). Parts are as even as possible: the first ``total % count`` parts have one frame
  more than the others.
- The source's video may end before its audio (the container lasts as long as its longer
  stream, and so does a whole render, whose video track then ends early: a player holds its
  last frame). The output's frames past the video's end (``Plan.pad_frames``: the duration
  minus ``video_seconds``, in frames) all go to the last part, which repeats the source's last
  frame for them; the last part starts at least ``LAST_PART_VIDEO_SECONDS`` before the video's
  end, so it holds source frames to repeat and no other part reaches past the video (the cut
  moves earlier, the other parts staying even, when the even cut would not). A video that ends
  after its audio needs nothing: the duration is the video's, the audio is padded with silence.
- What can't be split safely renders whole under the policy, and an explicit N >= 2 for it is
  refused at create (or, when the create could not learn the source's facts, renders whole):
  a source with a variable frame rate (parts cut on a frame grid the source does not follow
  drift); a source whose duration or frame rate is unknown (no frame timeline to cut); a
  slideshow (its frames come from one filter graph of looped stills from the first slide on, so
  a part could not start mid-way without rendering all that precedes it, and its burned-in
  subtitles are timed on the whole output's clock); a video codec outside ``SPLIT_CODECS``; a
  source whose video's own length is unknown (the frames past its end could not be planned).
- ``SPLIT_CODECS`` are h264 (mp4) and vp9 (webm): the encoders whose
  closed-GOP part settings the render service sets and whose joins its tests verify frame by
  frame. hevc renders whole: x265 opens its GOPs by default and its part encoding is not among
  the verified joins. av1 renders whole: its encoder is whichever one a render service's ffmpeg
  has (SVT-AV1 or libaom), so parts placed on two render services could be encoded by two
  different encoders, and parts must share identical encoder settings.
- The policy (``output.split.parts`` 0) splits only an output of at least
  ``policy.min_seconds``, and only when more than one render slot is free across a pool of more
  than one render service. It cuts about ``policy.part_seconds`` per part (at least two parts),
  at most one part per free slot and at most ``policy.max_parts``.
- An explicit N >= 2 is N parts whatever the free slots (parts wait for slots like any render),
  at most ``policy.max_parts``, and needs at least one frame per part.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from videojob import limits
from videojob.errors import InvalidArgument
from videojob.render.v1 import render_pb2, spec_pb2

PARTS_FIELD = "spec.output.split.parts"
# The video codecs whose parts are joined without re-encoding (see the module's docstring).
SPLIT_CODECS = frozenset({"h264", "vp9"})
# A frame count is the duration times the rate, give or take this (float error: 2 s at 29.97).
_FRAME_EPSILON = 1e-6
# The least of the source's video the last part holds when the audio outlasts the video: the
# frames the render's frame-rate filter fills at the video's end can differ from the planned
# ones by a frame, which must fall in the last part (that repeats the last frame), not before.
LAST_PART_VIDEO_SECONDS = 0.5


@dataclass(frozen=True)
class SplitPolicy:
    """The operator's policy for jobs that leave ``output.split.parts`` at 0."""

    # Outputs shorter than this render whole: the join, the audio pass and each part's
    # verification cost more than the parallel parts save.
    min_seconds: float = 60.0
    # The most parts one job is cut into (an explicit request above it is refused at create).
    max_parts: int = 8
    # About how long each part is; a longer output gets more parts (up to the free slots).
    part_seconds: float = 30.0


@dataclass(frozen=True)
class SourceFacts:
    """What the planner knows of the source (CheckInputsResponse's fields): 0 means unknown."""

    duration_seconds: float
    fps: float
    variable_frame_rate: bool = False
    has_audio: bool = False
    # When the source's video ends (its own stream, not the container): shorter than
    # ``duration_seconds`` when the audio outlasts the video. 0: unknown.
    video_seconds: float = 0.0


@dataclass(frozen=True)
class PlannedPart:
    index: int
    first_frame: int
    frame_count: int


@dataclass(frozen=True)
class Plan:
    """The output's frames [0, total_frames) at ``fps``, cut into ``parts`` in order; the last
    ``pad_frames`` of them lie past the source video's end (all in the last part)."""

    parts: tuple[PlannedPart, ...]
    total_frames: int
    fps: float
    pad_frames: int = 0


class WholeCause(enum.Enum):
    SPLIT_OFF = "split_off"
    UNSPLITTABLE = "unsplittable"
    TOO_SHORT = "too_short"
    NO_SLOTS = "no_slots"
    ONE_SERVICE = "one_service"


@dataclass(frozen=True)
class Whole:
    """The job renders whole, and why."""

    cause: WholeCause
    reason: str

    @property
    def shown(self) -> str:
        return f"rendered whole: {self.reason}"


def facts_from_spec(spec: spec_pb2.RenderSpec) -> SourceFacts | None:
    """The facts a normalized spec makes itself (a test pattern: its duration and rate, with
    the sine tone); None where the input files decide them."""
    if spec.source.WhichOneof("kind") != "test_pattern":
        return None
    pattern = spec.source.test_pattern
    seconds = pattern.duration_seconds
    return SourceFacts(seconds, pattern.fps, has_audio=True, video_seconds=seconds)


def source_facts(
    spec: spec_pb2.RenderSpec, answer: render_pb2.CheckInputsResponse | None
) -> SourceFacts | None:
    """The facts the planner works from: the spec's own where it makes them, else a render
    service's CheckInputs ``answer`` (None: nobody answered, so nothing is known)."""
    own = facts_from_spec(spec)
    if own is not None or answer is None:
        return own
    return SourceFacts(
        duration_seconds=answer.duration_seconds,
        fps=answer.fps,
        variable_frame_rate=answer.variable_frame_rate,
        has_audio=answer.has_audio,
        video_seconds=answer.video_duration_seconds,
    )


def output_fps(spec: spec_pb2.RenderSpec, facts: SourceFacts) -> float:
    """The output's frame rate: ``output.fps`` when set, else the source's (0: unknown)."""
    return spec.output.fps or facts.fps


def total_frames(spec: spec_pb2.RenderSpec, facts: SourceFacts) -> int:
    """The output's frames on its own timeline (0 when its duration or rate is unknown)."""
    fps = output_fps(spec, facts)
    if not (facts.duration_seconds > 0 and fps > 0):
        return 0
    return math.floor(facts.duration_seconds * fps + 0.5 + _FRAME_EPSILON)


def video_frames(spec: spec_pb2.RenderSpec, facts: SourceFacts) -> int:
    """The output's frames the source's video fills (0 when its length or rate is unknown); at
    most ``total_frames``."""
    fps = output_fps(spec, facts)
    if not (facts.video_seconds > 0 and fps > 0):
        return 0
    frames = math.floor(facts.video_seconds * fps + 0.5 + _FRAME_EPSILON)
    return min(frames, total_frames(spec, facts))


def _spec_unsplittable(spec: spec_pb2.RenderSpec) -> str | None:
    """Why the spec alone can't be split (None: it can, if its source allows)."""
    if spec.WhichOneof("internal") is not None:
        return "it is itself a render of a split job (a part, audio, join)"
    kind = spec.source.WhichOneof("kind")
    if kind == "slideshow":
        if spec.source.slideshow.subtitles_path:
            return "a slideshow with burned-in subtitles is timed on the whole output's clock"
        return "a slideshow's frames come from one filter graph from its first slide on"
    codec = spec.output.video_codec
    if codec not in SPLIT_CODECS:
        codecs = " and ".join(sorted(SPLIT_CODECS))
        return f"{codec} parts are not joined (only {codecs} are)"
    return None


def unsplittable_reason(spec: spec_pb2.RenderSpec, facts: SourceFacts | None) -> str | None:
    """Why ``spec`` (normalized) with a source of ``facts`` can't be split safely; None if it
    can. ``facts`` None: nothing is known of the source."""
    reason = _spec_unsplittable(spec)
    if reason is not None:
        return reason
    if facts is None:
        return "the source's duration and frame rate are unknown"
    if facts.variable_frame_rate:
        return "the source has a variable frame rate"
    if facts.duration_seconds <= 0:
        return "the source's duration is unknown"
    if output_fps(spec, facts) <= 0:
        return "the source's frame rate is unknown"
    if facts.video_seconds <= 0:
        return "the length of the source's video is unknown"
    return None


def even_parts(total: int, count: int) -> tuple[PlannedPart, ...]:
    """``total`` frames in ``count`` contiguous parts as even as possible (1 <= count <=
    total): the first ``total % count`` parts have one frame more."""
    if not 1 <= count <= total:
        raise ValueError(f"cannot cut {total} frames into {count} parts")
    size, longer = divmod(total, count)
    parts: list[PlannedPart] = []
    first = 0
    for index in range(count):
        frames = size + (1 if index < longer else 0)
        parts.append(PlannedPart(index, first, frames))
        first += frames
    return tuple(parts)


def cut_parts(total: int, video: int, count: int, fps: float) -> tuple[PlannedPart, ...] | None:
    """``total`` frames in ``count`` parts, the source's video filling the first ``video`` of
    them: as even as possible, the frames past the video's end all in the last part, which
    starts at least ``LAST_PART_VIDEO_SECONDS`` (and one frame) before the video's end. None
    when that leaves a part without a frame."""
    if count < 2 or total < count:
        return None
    if video >= total:
        return even_parts(total, count)
    margin = max(1, math.ceil(fps * LAST_PART_VIDEO_SECONDS - _FRAME_EPSILON))
    last_first = min(total - total // count, video - margin)
    if last_first < count - 1:
        return None
    before = even_parts(last_first, count - 1)
    return (*before, PlannedPart(count - 1, last_first, total - last_first))


def _policy_count(duration: float, policy: SplitPolicy, free_slots: Sequence[int]) -> int | Whole:
    """How many parts the policy cuts an output of ``duration`` seconds into, or why none."""
    if duration < policy.min_seconds:
        return Whole(
            WholeCause.TOO_SHORT,
            f"too short to gain ({duration:g} s; the policy splits from {policy.min_seconds:g} s)",
        )
    if len(free_slots) < 2:
        return Whole(WholeCause.ONE_SERVICE, "a pool of one render service")
    free = sum(max(slots, 0) for slots in free_slots)
    if free < 2:
        slots = "no render slot" if free == 0 else "one render slot"
        return Whole(WholeCause.NO_SLOTS, f"{slots} free")
    by_length = max(2, math.floor(duration / policy.part_seconds + _FRAME_EPSILON))
    return min(by_length, free, policy.max_parts)


def plan_split(
    spec: spec_pb2.RenderSpec,
    facts: SourceFacts | None,
    policy: SplitPolicy,
    free_slots: Sequence[int],
) -> Plan | Whole:
    """The split of the job of ``spec`` (normalized), or why it renders whole. ``free_slots``:
    the free render slots of each usable render service of the pool (one entry per service)."""
    requested = spec.output.split.parts
    if requested == 1:
        return Whole(WholeCause.SPLIT_OFF, "split off (parts = 1)")
    reason = unsplittable_reason(spec, facts)
    if reason is not None:
        return Whole(WholeCause.UNSPLITTABLE, reason)
    assert facts is not None  # unsplittable otherwise
    total = total_frames(spec, facts)
    if requested >= 2:
        count: int | Whole = min(requested, policy.max_parts)
    else:
        count = _policy_count(facts.duration_seconds, policy, free_slots)
    if isinstance(count, Whole):
        return count
    if total < count:
        return Whole(WholeCause.TOO_SHORT, f"too short to gain ({total} frames)")
    fps = output_fps(spec, facts)
    video = video_frames(spec, facts)
    parts = cut_parts(total, video, count, fps)
    if parts is None:
        return Whole(WholeCause.TOO_SHORT, f"its video is too short to cut ({video} frames)")
    return Plan(parts, total, fps, total - video)


def refuse_internal_kinds(spec: spec_pb2.RenderSpec) -> None:
    """InvalidArgument naming ``spec.part``, ``spec.audio`` or ``spec.join`` when a client set
    one."""
    kind = spec.WhichOneof("internal")
    if kind is not None:
        raise InvalidArgument(
            f"spec.{kind}", "is a render kind internal to split renders: clients can't set it"
        )


def check_split_request(
    spec: spec_pb2.RenderSpec, policy: SplitPolicy, facts: SourceFacts | None = None
) -> None:
    """Refuses (InvalidArgument naming the field) what a client may not ask of ``spec``
    (normalized): an internal render kind; more parts than ``policy.max_parts``; N >= 2 parts of
    what can't be split safely or of an output shorter than N frames. Without ``facts``, only
    what the spec alone decides is checked (call again with the facts once a render service
    answered them; an input check nobody answered leaves the source to the planner)."""
    refuse_internal_kinds(spec)
    requested = spec.output.split.parts
    if requested < 2:
        return
    ceiling = min(policy.max_parts, limits.MAX_SPLIT_PARTS)
    if requested > ceiling:
        raise InvalidArgument(PARTS_FIELD, f"must be at most {ceiling} (this service's limit)")
    reason = _spec_unsplittable(spec)
    if reason is None and facts is not None:
        reason = unsplittable_reason(spec, facts)
    if reason is not None:
        raise InvalidArgument(PARTS_FIELD, f"this job can't be split safely: {reason} (use 0 or 1)")
    if facts is None:
        return
    total = total_frames(spec, facts)
    if total < requested:
        raise InvalidArgument(
            PARTS_FIELD, f"the output has {total} frames: fewer than {requested} parts"
        )
    video = video_frames(spec, facts)
    if cut_parts(total, video, requested, output_fps(spec, facts)) is None:
        raise InvalidArgument(
            PARTS_FIELD,
            f"the source's video fills {video} of the output's {total} frames: "
            f"too few for {requested} parts",
        )


def part_spec(spec: spec_pb2.RenderSpec, plan: Plan, index: int) -> spec_pb2.RenderSpec:
    """The RenderSpec of part ``index``'s render: the job's spec with ``part`` set."""
    part = plan.parts[index]
    last = index == len(plan.parts) - 1
    rendered = spec_pb2.RenderSpec()
    rendered.CopyFrom(spec)
    rendered.part.CopyFrom(
        spec_pb2.SplitPart(
            index=part.index,
            count=len(plan.parts),
            first_frame=part.first_frame,
            frame_count=part.frame_count,
            total_frames=plan.total_frames,
            fps=plan.fps,
            pad_frames=plan.pad_frames if last else 0,
        )
    )
    return rendered


def audio_spec(spec: spec_pb2.RenderSpec, plan: Plan) -> spec_pb2.RenderSpec:
    """The RenderSpec of the split's audio render (for a source with audio: ``has_audio`` in
    its facts): the whole output's audio, encoded once beside the parts, so that the join only
    muxes it (``join_spec``'s ``audio_path``)."""
    rendered = spec_pb2.RenderSpec()
    rendered.CopyFrom(spec)
    rendered.audio.CopyFrom(spec_pb2.SplitAudio(total_frames=plan.total_frames, fps=plan.fps))
    return rendered


def join_spec(
    spec: spec_pb2.RenderSpec, plan: Plan, part_paths: Sequence[str], audio_path: str = ""
) -> spec_pb2.RenderSpec:
    """The RenderSpec of the join: the job's spec with ``join`` set, ``part_paths`` in plan
    order as the parts' Completed events reported them, and ``audio_path`` the file the audio
    render's Completed event reported (empty: the join encodes the audio itself)."""
    if len(part_paths) != len(plan.parts):
        raise ValueError(f"{len(part_paths)} part paths for a plan of {len(plan.parts)} parts")
    rendered = spec_pb2.RenderSpec()
    rendered.CopyFrom(spec)
    rendered.join.CopyFrom(
        spec_pb2.SplitJoin(
            part_paths=list(part_paths),
            total_frames=plan.total_frames,
            fps=plan.fps,
            audio_path=audio_path,
        )
    )
    return rendered
