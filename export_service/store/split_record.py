"""A split job's parts as its record keeps them: the plan (each part's frames on the output's
frame timeline), and per part (and for the join of the parts) the render that makes it now,
where it runs, how far it got and how many attempts it used.

Kept as JSON on the job (``split_parts``); the frames each running part reported last travel
with the job's coalesced progress write (``split_frames``), so part progress costs no version
of its own. Plain values only; the transitions that change them are store.transitions'.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace


class PartState(enum.StrEnum):
    PENDING = "pending"  # planned (or to be rendered again), not placed yet
    RENDERING = "rendering"  # placed: its render was (or is about to be) started
    RETRYING = "retrying"  # its render was lost or failed: rendered again as its next attempt
    DONE = "done"  # its render completed: its output is kept until the job is terminal


# Where the join of the parts, and the whole output's audio rendered beside them, are
# addressed wherever a part's index is taken.
JOIN_INDEX = -1
AUDIO_INDEX = -2


@dataclass(frozen=True)
class PartRecord:
    """One part of a split job (or its join: ``index`` JOIN_INDEX, or the whole output's audio
    rendered beside the parts: AUDIO_INDEX; both span all the frames)."""

    index: int
    first_frame: int
    frame_count: int
    state: PartState = PartState.PENDING
    # The render that makes it now ("" until placed) and the render service it was placed on.
    render_id: str = ""
    instance_id: str = ""
    address: str = ""
    # Attempts started (placed) for it, against the per-part budget.
    attempts: int = 0
    # Frames finished, as of the last part change (the running ones: see Job.split_frames).
    frames_done: int = 0
    # Once DONE: the output as its Completed event reported it, for the join and the clean-up.
    output_path: str = ""
    # Why it is being rendered again (RETRYING), or why its last attempt ended.
    note: str = ""
    # When its render was placed (epoch seconds; 0: placed by a version that did not say), and
    # whether that render still waits for a slot in its render service's line (placed, and the
    # render service has not said it started): the lines of export_service.queue_line.
    placed_at: float = 0.0
    waiting_for_slot: bool = False

    @property
    def is_join(self) -> bool:
        return self.index == JOIN_INDEX

    @property
    def is_audio(self) -> bool:
        return self.index == AUDIO_INDEX

    @property
    def label(self) -> str:
        """How a job's stage and failure name it: "part 3" (1-based), "the join", "the audio"."""
        if self.is_audio:
            return "the audio"
        return "the join" if self.is_join else f"part {self.index + 1}"

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "first_frame": self.first_frame,
            "frame_count": self.frame_count,
            "state": self.state.value,
            "render_id": self.render_id,
            "instance_id": self.instance_id,
            "address": self.address,
            "attempts": self.attempts,
            "frames_done": self.frames_done,
            "output_path": self.output_path,
            "note": self.note,
            "placed_at": self.placed_at,
            "waiting_for_slot": self.waiting_for_slot,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> PartRecord:
        return cls(
            index=int(str(raw["index"])),
            first_frame=int(str(raw["first_frame"])),
            frame_count=int(str(raw["frame_count"])),
            state=PartState(str(raw.get("state", PartState.PENDING.value))),
            render_id=str(raw.get("render_id", "")),
            instance_id=str(raw.get("instance_id", "")),
            address=str(raw.get("address", "")),
            attempts=int(str(raw.get("attempts", 0))),
            frames_done=int(str(raw.get("frames_done", 0))),
            output_path=str(raw.get("output_path", "")),
            note=str(raw.get("note", "")),
            placed_at=float(str(raw.get("placed_at", 0.0))),
            waiting_for_slot=raw.get("waiting_for_slot") is True,
        )


@dataclass(frozen=True)
class SplitRecord:
    """A split job's plan and the state of each of its renders."""

    total_frames: int
    parts: tuple[PartRecord, ...]
    # Planned with the parts (all the frames); placed once every part is DONE.
    join: PartRecord
    # The output's frame rate the plan was made on.
    fps: float = 0.0
    # The whole output's audio, rendered beside the parts (None: the join encodes it).
    audio: PartRecord | None = None
    # The last frames past the source video's end, which the last part repeats its last frame
    # for (the audio outlasts the video).
    pad_frames: int = 0

    def render(self, index: int) -> PartRecord:
        """The part at ``index``, the join (JOIN_INDEX) or the audio (AUDIO_INDEX); KeyError
        for no such part."""
        if index == JOIN_INDEX:
            return self.join
        if index == AUDIO_INDEX and self.audio is not None:
            return self.audio
        if 0 <= index < len(self.parts):
            return self.parts[index]
        raise KeyError(f"no part {index}")

    @property
    def renders(self) -> tuple[PartRecord, ...]:
        """Every render of the job: the parts in plan order, the audio, then the join."""
        audio = () if self.audio is None else (self.audio,)
        return (*self.parts, *audio, self.join)

    def with_render(self, index: int, change: Callable[[PartRecord], PartRecord]) -> SplitRecord:
        changed = change(self.render(index))
        if index == JOIN_INDEX:
            return replace(self, join=changed)
        if index == AUDIO_INDEX:
            return replace(self, audio=changed)
        parts = tuple(changed if part.index == index else part for part in self.parts)
        return replace(self, parts=parts)

    def to_json(self) -> str:
        raw = {
            "total_frames": self.total_frames,
            "parts": [part.to_dict() for part in self.parts],
            "join": self.join.to_dict(),
            "fps": self.fps,
            "audio": None if self.audio is None else self.audio.to_dict(),
            "pad_frames": self.pad_frames,
        }
        return json.dumps(raw, separators=(",", ":"))


def planned(
    total_frames: int,
    parts: tuple[tuple[int, int], ...],
    fps: float = 0.0,
    audio: bool = False,
    pad_frames: int = 0,
) -> SplitRecord:
    """A new plan: ``parts`` as (first_frame, frame_count) in order, covering the frames once;
    ``audio``: the output's audio rendered beside them; ``pad_frames``: the last frames, past
    the source video's end (within the last part)."""
    covered = 0
    records = []
    for index, (first_frame, frame_count) in enumerate(parts):
        if first_frame != covered or frame_count <= 0:
            raise ValueError(f"part {index} does not follow on the frame timeline")
        covered += frame_count
        records.append(PartRecord(index, first_frame, frame_count))
    if covered != total_frames or len(records) < 2:
        raise ValueError(f"{len(records)} parts cover {covered} of {total_frames} frames")
    if not 0 <= pad_frames < records[-1].frame_count:
        raise ValueError(f"{pad_frames} frames past the video's end in the last part")
    join = PartRecord(JOIN_INDEX, 0, total_frames)
    sound = PartRecord(AUDIO_INDEX, 0, total_frames) if audio else None
    return SplitRecord(total_frames, tuple(records), join, fps, sound, pad_frames)


@functools.lru_cache(maxsize=1024)
def split_from_json(raw: str) -> SplitRecord | None:
    """The record stored as ``raw`` ("": the job is not split)."""
    if not raw:
        return None
    loaded = json.loads(raw)
    return SplitRecord(
        total_frames=int(loaded["total_frames"]),
        parts=tuple(PartRecord.from_dict(part) for part in loaded["parts"]),
        join=PartRecord.from_dict(loaded["join"]),
        fps=float(loaded.get("fps", 0.0)),
        audio=None if loaded.get("audio") is None else PartRecord.from_dict(loaded["audio"]),
        pad_frames=int(loaded.get("pad_frames", 0)),
    )


@functools.lru_cache(maxsize=1024)
def frames_from_json(raw: str) -> tuple[int, ...]:
    """The frames each part reported last, in plan order (``split_frames``)."""
    return tuple(int(frames) for frames in json.loads(raw)) if raw else ()


def frames_to_json(frames: tuple[int, ...]) -> str:
    return json.dumps(list(frames), separators=(",", ":")) if frames else ""


def part_render_id(job_id: str, index: int, attempt: int) -> str:
    """The render id of a part's attempt (``<job>-p<n>``, then ``-a<attempt>``), or of the
    join's (``<job>-join``) or the audio's (``<job>-audio``): never a whole job's
    (store.records.render_id_for)."""
    if index == JOIN_INDEX:
        base = f"{job_id}-join"
    elif index == AUDIO_INDEX:
        base = f"{job_id}-audio"
    else:
        base = f"{job_id}-p{index + 1}"
    return base if attempt <= 1 else f"{base}-a{attempt}"
