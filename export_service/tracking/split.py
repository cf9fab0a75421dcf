"""The decisions of a split job's tracking, beside ``decide``: pure, no I/O, no clock.

A split job renders each part as a render of its own (followed like any render attempt, by
``tracking.attempt``), then the join of its parts. What is decided here, for the job:

- its Rendering band: the frames finished across all parts over the total, mapped into 2-95,
  never decreasing: while a part renders its frames again the band holds its maximum, and the
  stage says so ("Part 3 retrying");
- its ETA, from the aggregate rate (frames finished across all parts per second, since the
  tracker first saw them);
- when the join starts: every part done;
- what an ended part render means: done; rendered again within the per-part attempt budget
  (elsewhere when its render service was lost or failed it); or the job failed, naming the part
  and ffmpeg's reason, once the budget is spent (at once for a spec the render refused);
- what a cancel or a terminal job leaves to stop and remove: every part's and the join's render,
  and every output a part made (no part outlives the job's terminal state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from export_service.store.split_record import PartRecord, PartState, SplitRecord
from videojob.limits import (
    FAILURE_INTERNAL,
    FAILURE_INVALID_INPUT,
    FAILURE_RENDER_LOST,
    MAX_RUNNING_PROGRESS,
)

# The Rendering band of design.md's progress bands: Preparing ends at 2, Finalizing starts at 95.
RENDERING_FROM = 2.0
RENDERING_TO = 95.0
# Joining, Verifying and Uploading keep the job's progress here, and move stage_progress.
AFTER_RENDERING = RENDERING_TO
STAGE_RENDERING = "Rendering"
STAGE_JOINING = "Joining"

# A spec the render refuses renders no better a second time.
_FOR_GOOD = frozenset({FAILURE_INVALID_INPUT})


def frames_finished(split: SplitRecord, frames: Sequence[int]) -> int:
    """Frames finished across all parts: a done part's all, a running part's as it reported
    (``frames``: per part, in plan order; a missing entry counts none), never more than a
    part has."""
    total = 0
    for part in split.parts:
        if part.state is PartState.DONE:
            total += part.frame_count
        elif part.state is PartState.RENDERING and part.index < len(frames):
            total += min(max(frames[part.index], 0), part.frame_count)
    return total


def rendering_progress(split: SplitRecord, frames: Sequence[int], held: float) -> float:
    """The job's progress while its parts render: finished frames over the total in 2-95, never
    below ``held`` (the job's progress as it stands: it never decreases)."""
    share = frames_finished(split, frames) / split.total_frames if split.total_frames else 0.0
    percent = RENDERING_FROM + (RENDERING_TO - RENDERING_FROM) * min(share, 1.0)
    return min(max(percent, held), MAX_RUNNING_PROGRESS)


def part_frames(frame: int, percent: float, frame_count: int, before: int) -> int:
    """The frames a part's render has finished, from its progress event: the ``frame`` it
    reported, or, while it reports none (a trimmed part's ffmpeg still reaching its first
    frame), its percent's place in the render's Rendering band (2-95: the 2 of Preparing is no
    frame). Never fewer than ``before`` (this render's frames so far: 0 once it is placed), so
    a part's frames never fall within one render; never more than ``frame_count``."""
    if frame <= 0:
        share = (percent - RENDERING_FROM) / (RENDERING_TO - RENDERING_FROM)
        frame = round(min(max(share, 0.0), 1.0) * frame_count)
    return min(max(frame, before, 0), frame_count)


def rendering_stage(split: SplitRecord) -> str:
    """ "Rendering", or which parts render their frames again ("Part 3 retrying")."""
    again = [part for part in split.parts if part.state is PartState.RETRYING]
    again += [
        part for part in split.parts if part.state is PartState.RENDERING and part.attempts > 1
    ]
    if not again:
        return STAGE_RENDERING
    numbers = sorted({part.index + 1 for part in again})
    if len(numbers) == 1:
        return f"Part {numbers[0]} retrying"
    return f"Parts {', '.join(map(str, numbers))} retrying"


@dataclass(frozen=True)
class AggregateRate:
    """Frames finished across all parts since ``since`` (the first look, or the last time frames
    were lost), for the ETA; ``frames_last``: as last seen."""

    since: float
    frames_then: int
    frames_last: int = 0

    def observed(self, frames_now: int, now: float) -> AggregateRate:
        """The rate with ``frames_now`` seen: measured afresh when frames were lost (a part
        renders its frames again)."""
        if frames_now < self.frames_last:
            return AggregateRate(now, frames_now, frames_now)
        return replace(self, frames_last=frames_now)

    def eta_seconds(self, frames_now: int, total_frames: int, now: float) -> float:
        """Seconds until every frame is finished at the rate seen so far; 0 while unknown
        (nothing finished yet since the first look, or no time passed)."""
        elapsed = now - self.since
        gained = frames_now - self.frames_then
        if elapsed <= 0 or gained <= 0:
            return 0.0
        return max(total_frames - frames_now, 0) / (gained / elapsed)


def join_due(split: SplitRecord) -> bool:
    """Every part (and the audio rendered beside them) done and the join not placed yet: time
    to start it."""
    before = (*split.parts, *(() if split.audio is None else (split.audio,)))
    return split.join.state is PartState.PENDING and all(
        part.state is PartState.DONE for part in before
    )


def unfinished_parts(split: SplitRecord) -> tuple[PartRecord, ...]:
    """The parts still to render (pending, retrying) or rendering, in plan order."""
    return tuple(part for part in split.parts if part.state is not PartState.DONE)


# What an ended part render means.


@dataclass(frozen=True)
class PartEnded:
    """How a part's render (or the join's) ended without its output."""

    code: str
    message: str
    log_tail: str = ""
    # Its render service was lost (or failed it): the next attempt is placed on another.
    service_lost: bool = False


@dataclass(frozen=True)
class RetryPart:
    """Render the part again as its next attempt (``elsewhere``: on another render service)."""

    attempt: int
    elsewhere: bool
    note: str
    stage: str


@dataclass(frozen=True)
class FailJob:
    code: str
    message: str
    log_tail: str = ""


def after_part_ended(
    split: SplitRecord, part: PartRecord, ended: PartEnded, max_attempts: int
) -> RetryPart | FailJob:
    """A part's render ended without its output: rendered again while its attempts last;
    otherwise the job fails, naming the part and the render's (ffmpeg's) reason."""
    count = len(split.parts)
    if part.is_audio:
        named = "the output's audio"
    elif part.is_join:
        named = "the join of the parts"
    else:
        named = f"part {part.index + 1} of {count}"
    reason = ended.message or "the render failed"
    if ended.code in _FOR_GOOD or part.attempts >= max_attempts:
        spent = "" if ended.code in _FOR_GOOD else f" (after {part.attempts} attempts)"
        return FailJob(
            ended.code or FAILURE_INTERNAL, f"{named} failed{spent}: {reason}", ended.log_tail
        )
    if part.is_audio:
        stage = "Audio retrying"
    elif part.is_join:
        stage = "Join retrying"
    else:
        stage = f"Part {part.index + 1} retrying"
    return RetryPart(
        attempt=part.attempts + 1,
        elsewhere=ended.service_lost or ended.code != FAILURE_RENDER_LOST,
        note=reason,
        stage=stage,
    )


# What is left to stop and remove.


def renders_to_cancel(split: SplitRecord) -> tuple[PartRecord, ...]:
    """The renders a cancelled (or otherwise terminal) job still has running: every placed part
    not done, and the join when placed (a completed job's join is its output: not cancelled)."""
    return tuple(
        part
        for part in split.renders
        if part.render_id and part.state in (PartState.RENDERING, PartState.RETRYING)
    )


def part_outputs(split: SplitRecord) -> tuple[str, ...]:
    """Every output a part (or the audio) made, kept for the join: removed once the job is
    terminal, whatever its outcome."""
    audio = () if split.audio is None else (split.audio,)
    return tuple(part.output_path for part in (*split.parts, *audio) if part.output_path)
