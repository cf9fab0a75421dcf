"""Where a split job's tracking meets its plan: whether a job is split, into which parts, and
the specs of a part's render and of the join's.

A small stand-in until the planner (its policy, the source's facts) takes this place: it splits
only a job that asks for N >= 2 parts explicitly and whose output's frames are known from its
spec (a test pattern), evenly on the frame timeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from videojob.render.v1 import spec_pb2


@dataclass(frozen=True)
class PlannedPart:
    index: int
    first_frame: int
    frame_count: int


@dataclass(frozen=True)
class Plan:
    parts: tuple[PlannedPart, ...]
    total_frames: int
    fps: float


def plan_split(spec: spec_pb2.RenderSpec) -> Plan | None:
    """The parts of ``spec``'s output, or None: rendered whole."""
    asked = spec.output.split.parts
    if asked < 2 or spec.source.WhichOneof("kind") != "test_pattern":
        return None
    pattern = spec.source.test_pattern
    fps = spec.output.fps or pattern.fps
    total = round(pattern.duration_seconds * fps)
    if fps <= 0 or total < asked:
        return None
    base, extra = divmod(total, asked)
    parts = []
    first = 0
    for index in range(asked):
        count = base + (1 if index < extra else 0)
        parts.append(PlannedPart(index, first, count))
        first += count
    return Plan(tuple(parts), total, fps)


def part_spec(spec: spec_pb2.RenderSpec, plan: Plan, index: int) -> spec_pb2.RenderSpec:
    """The render of part ``index``: the job's source and output, and the part's frames."""
    part = plan.parts[index]
    rendered = spec_pb2.RenderSpec()
    rendered.CopyFrom(spec)
    rendered.part.CopyFrom(
        spec_pb2.SplitPart(
            index=index,
            count=len(plan.parts),
            first_frame=part.first_frame,
            frame_count=part.frame_count,
            total_frames=plan.total_frames,
            fps=plan.fps,
        )
    )
    return rendered


def join_spec(
    spec: spec_pb2.RenderSpec, plan: Plan, part_paths: Sequence[str]
) -> spec_pb2.RenderSpec:
    """The join of the parts (their outputs in plan order) into the job's output."""
    rendered = spec_pb2.RenderSpec()
    rendered.CopyFrom(spec)
    rendered.join.CopyFrom(
        spec_pb2.SplitJoin(
            part_paths=list(part_paths), total_frames=plan.total_frames, fps=plan.fps
        )
    )
    return rendered
