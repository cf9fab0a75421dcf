"""The render kinds of a split job (``RenderSpec.part``, ``RenderSpec.audio``,
``RenderSpec.join``) as the render service checks them before rendering: every rejection names
its field."""

from __future__ import annotations

import math

from videojob import limits
from videojob.errors import InvalidArgument
from videojob.render.v1 import spec_pb2


def split_kind(spec: spec_pb2.RenderSpec) -> str | None:
    """``"part"``, ``"audio"``, ``"join"`` or None (an ordinary render)."""
    return spec.WhichOneof("internal")


def _check_fps(value: float, field: str) -> None:
    if not math.isfinite(value) or not limits.MIN_FPS <= value <= limits.MAX_FPS:
        raise InvalidArgument(
            field, f"must be a frame rate between {limits.MIN_FPS:g} and {limits.MAX_FPS:g}"
        )


def check_split_spec(spec: spec_pb2.RenderSpec) -> None:
    """InvalidArgument naming the field of a part or join that cannot be rendered."""
    kind = split_kind(spec)
    if kind == "part":
        part = spec.part
        if part.count < 2:
            raise InvalidArgument("spec.part.count", "must be at least 2")
        if part.index >= part.count:
            raise InvalidArgument("spec.part.index", f"must be below count ({part.count})")
        if part.frame_count == 0:
            raise InvalidArgument("spec.part.frame_count", "must be positive")
        if part.first_frame + part.frame_count > part.total_frames:
            raise InvalidArgument(
                "spec.part.frame_count",
                f"frames {part.first_frame}..{part.first_frame + part.frame_count - 1} run past "
                f"the output's {part.total_frames} frames",
            )
        _check_fps(part.fps, "spec.part.fps")
        if part.pad_frames and not part_is_last(part):
            raise InvalidArgument("spec.part.pad_frames", "is for the last part only")
        if part.pad_frames >= part.frame_count:
            raise InvalidArgument(
                "spec.part.pad_frames",
                f"must be below frame_count ({part.frame_count}): the part repeats a frame "
                "of the source's",
            )
    elif kind == "join":
        join = spec.join
        if len(join.part_paths) < 2:
            raise InvalidArgument("spec.join.part_paths", "must name at least 2 parts")
        for index, path in enumerate(join.part_paths):
            if not path or "\x00" in path or "\n" in path or "\r" in path:
                raise InvalidArgument(f"spec.join.part_paths[{index}]", "is not a file's path")
        if join.total_frames == 0:
            raise InvalidArgument("spec.join.total_frames", "must be positive")
        _check_fps(join.fps, "spec.join.fps")
        audio_path = join.audio_path
        if "\x00" in audio_path or "\n" in audio_path or "\r" in audio_path:
            raise InvalidArgument("spec.join.audio_path", "is not a file's path")
    elif kind == "audio":
        if spec.audio.total_frames == 0:
            raise InvalidArgument("spec.audio.total_frames", "must be positive")
        _check_fps(spec.audio.fps, "spec.audio.fps")


def part_is_last(part: spec_pb2.SplitPart) -> bool:
    return part.first_frame + part.frame_count == part.total_frames
