"""Validation of RenderSpec, shared by the render service and the export service.

``normalize_spec`` checks everything that needs no file system and fills in defaults;
``resolve_media_path`` confines an input path to the media root. Every rejection is an
``InvalidArgument`` naming the offending field by its proto path (``spec.output.fps``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from videojob import limits
from videojob.errors import InvalidArgument
from videojob.render.v1 import spec_pb2


def _check_duration(value: float, field: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(field, "must be a positive number of seconds")
    if value < limits.MIN_DURATION_SECONDS:
        raise InvalidArgument(field, f"must be at least {limits.MIN_DURATION_SECONDS} seconds")
    if value > limits.MAX_DURATION_SECONDS:
        raise InvalidArgument(field, f"must be at most {limits.MAX_DURATION_SECONDS:.0f} seconds")


def _check_size(width: int, height: int, prefix: str, *, required: bool) -> None:
    """Where not ``required``, 0 is "not set": one of the two alone scales keeping the aspect
    ratio (the other follows, rounded to an even number)."""
    for name, value, bound in (
        ("width", width, limits.MAX_WIDTH),
        ("height", height, limits.MAX_HEIGHT),
    ):
        field = f"{prefix}.{name}"
        if value == 0 and not required:
            continue
        if value <= 0:
            raise InvalidArgument(field, "must be positive")
        if value > bound:
            raise InvalidArgument(field, f"must be at most {bound}")
        if value % limits.DIMENSION_MULTIPLE:
            raise InvalidArgument(field, "must be even (required by yuv420p encoders)")


def _check_fps(value: float, field: str, *, required: bool) -> None:
    if value == 0 and not required:
        return
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(field, "must be a positive frame rate")
    if value < limits.MIN_FPS:
        raise InvalidArgument(
            field, f"must be at least {limits.MIN_FPS:.0f} (0 or unset for the default)"
        )
    if value > limits.MAX_FPS:
        raise InvalidArgument(field, f"must be at most {limits.MAX_FPS:.0f}")


def check_relative_path(value: str, field: str) -> None:
    """Rejects paths that could name anything outside the media root, before touching disk."""
    if not value:
        raise InvalidArgument(field, "is required")
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL bytes")
    if len(value) > limits.MAX_PATH_LENGTH:
        raise InvalidArgument(field, f"must be at most {limits.MAX_PATH_LENGTH} characters")
    if any(ord(ch) < 0x20 for ch in value):
        raise InvalidArgument(field, "must not contain control characters")
    if os.path.isabs(value) or value.startswith(("/", "\\")):
        raise InvalidArgument(field, "must be relative to the media root")
    parts = Path(value).parts
    if ".." in parts:
        raise InvalidArgument(field, "must not contain '..'")
    if any(len(part.encode()) > limits.MAX_PATH_COMPONENT_BYTES for part in parts):
        raise InvalidArgument(
            field, f"has a path component longer than {limits.MAX_PATH_COMPONENT_BYTES} bytes"
        )


def resolve_media_path(media_root: Path, value: str, field: str) -> Path:
    """The real path of an existing regular file under ``media_root`` (symlinks resolved)."""
    check_relative_path(value, field)
    root = media_root.resolve()
    try:
        resolved = (root / value).resolve(strict=True)
    except FileNotFoundError:
        raise InvalidArgument(field, f"file not found: {value!r}") from None
    except OSError as exc:
        raise InvalidArgument(field, f"cannot be resolved: {exc.strerror or exc}") from None
    except RuntimeError:  # a symlink loop
        raise InvalidArgument(field, "cannot be resolved: symlink loop") from None
    if not resolved.is_relative_to(root):
        raise InvalidArgument(field, "resolves outside the media root")
    if not resolved.is_file():
        raise InvalidArgument(field, "is not a regular file")
    return resolved


def normalize_spec(spec: spec_pb2.RenderSpec, field: str = "spec") -> spec_pb2.RenderSpec:
    """Checks ``spec`` and returns a copy with every default filled in."""
    normalized = spec_pb2.RenderSpec()
    normalized.CopyFrom(spec)
    source = normalized.source
    kind = source.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument(
            f"{field}.source", "one of test_pattern, transcode or slideshow is required"
        )
    if kind == "test_pattern":
        pattern = source.test_pattern
        prefix = f"{field}.source.test_pattern"
        _check_duration(pattern.duration_seconds, f"{prefix}.duration_seconds")
        if pattern.width == 0 and pattern.height == 0:
            pattern.width = limits.DEFAULT_TEST_PATTERN_WIDTH
            pattern.height = limits.DEFAULT_TEST_PATTERN_HEIGHT
        _check_size(pattern.width, pattern.height, prefix, required=True)
        if pattern.fps == 0:
            pattern.fps = limits.DEFAULT_TEST_PATTERN_FPS
        _check_fps(pattern.fps, f"{prefix}.fps", required=True)
    elif kind == "transcode":
        check_relative_path(source.transcode.input_path, f"{field}.source.transcode.input_path")
    else:
        show = source.slideshow
        prefix = f"{field}.source.slideshow"
        if len(show.slides) < limits.MIN_SLIDES:
            raise InvalidArgument(
                f"{prefix}.slides", f"at least {limits.MIN_SLIDES} slide is required"
            )
        if len(show.slides) > limits.MAX_SLIDES:
            raise InvalidArgument(
                f"{prefix}.slides", f"at most {limits.MAX_SLIDES} slides are allowed"
            )
        total = 0.0
        for index, slide in enumerate(show.slides):
            check_relative_path(slide.image_path, f"{prefix}.slides[{index}].image_path")
            _check_duration(slide.duration_seconds, f"{prefix}.slides[{index}].duration_seconds")
            total += slide.duration_seconds
        _check_duration(total, f"{prefix}.slides")
        if show.audio_path:
            check_relative_path(show.audio_path, f"{prefix}.audio_path")
        if show.subtitles_path:
            check_relative_path(show.subtitles_path, f"{prefix}.subtitles_path")

    output = normalized.output
    prefix = f"{field}.output"
    if not output.container:
        output.container = limits.DEFAULT_CONTAINER
    if output.container not in limits.CONTAINERS:
        raise InvalidArgument(
            f"{prefix}.container", f"must be one of {', '.join(limits.CONTAINERS)}"
        )
    if not output.video_codec:
        output.video_codec = limits.DEFAULT_VIDEO_CODEC[output.container]
    allowed_video = limits.VIDEO_CODECS_BY_CONTAINER[output.container]
    if output.video_codec not in allowed_video:
        raise InvalidArgument(
            f"{prefix}.video_codec",
            f"{output.video_codec!r} is not allowed in {output.container}; "
            f"use one of {', '.join(allowed_video)}",
        )
    if not output.audio_codec:
        output.audio_codec = limits.DEFAULT_AUDIO_CODEC[output.container]
    allowed_audio = limits.AUDIO_CODECS_BY_CONTAINER[output.container]
    if output.audio_codec not in allowed_audio:
        raise InvalidArgument(
            f"{prefix}.audio_codec",
            f"{output.audio_codec!r} is not allowed in {output.container}; "
            f"use one of {', '.join(allowed_audio)}",
        )
    _check_size(output.width, output.height, prefix, required=False)
    _check_fps(output.fps, f"{prefix}.fps", required=False)
    if output.HasField("crf"):
        low, high = limits.CRF_RANGE_BY_CODEC[output.video_codec]
        if not low <= output.crf <= high:
            raise InvalidArgument(
                f"{prefix}.crf", f"must be between {low} and {high} for {output.video_codec}"
            )
    if output.preset and output.preset not in limits.PRESETS:
        raise InvalidArgument(f"{prefix}.preset", f"must be one of {', '.join(limits.PRESETS)}")
    if output.faststart and output.container not in limits.FASTSTART_CONTAINERS:
        containers = " or ".join(limits.FASTSTART_CONTAINERS)
        raise InvalidArgument(f"{prefix}.faststart", f"applies only to the {containers} container")
    return normalized


def expected_duration_seconds(spec: spec_pb2.RenderSpec) -> float | None:
    """The output duration implied by the spec alone (None for a transcode: it needs the input)."""
    kind = spec.source.WhichOneof("kind")
    if kind == "test_pattern":
        return spec.source.test_pattern.duration_seconds
    if kind == "slideshow":
        return sum(slide.duration_seconds for slide in spec.source.slideshow.slides)
    return None


@dataclass(frozen=True)
class PixelRate:
    """The output a spec asks for: its size and frame rate, and the field the rate comes from
    (a proto path relative to the spec)."""

    width: int
    height: int
    fps: float
    fps_field: str

    @property
    def per_second(self) -> float:
        return self.width * self.height * self.fps


def _follow(given: int, base_given: int, base_other: int) -> int:
    """The dimension that follows the aspect ratio when one alone is set (ffmpeg's -2: even)."""
    return max(2, round(given * base_other / base_given / 2) * 2)


def output_pixel_rate(spec: spec_pb2.RenderSpec) -> PixelRate | None:
    """What ``spec`` (normalized) renders per second, where the spec alone decides it: a test
    pattern always; a slideshow whose output sets both dimensions (at 25 fps without
    ``output.fps``); a transcode whose output sets both dimensions and the frame rate. None
    where the input files decide (their size or timing, as read when rendering)."""
    output = spec.output
    kind = spec.source.WhichOneof("kind")
    if kind == "test_pattern":
        pattern = spec.source.test_pattern
        width, height = pattern.width, pattern.height
        if output.width and output.height:
            width, height = output.width, output.height
        elif output.width:
            width, height = output.width, _follow(output.width, width, height)
        elif output.height:
            width, height = _follow(output.height, height, width), output.height
        if output.fps:
            return PixelRate(width, height, output.fps, "output.fps")
        return PixelRate(width, height, pattern.fps, "source.test_pattern.fps")
    if not (output.width and output.height):
        return None
    if kind == "slideshow":
        fps = output.fps or limits.DEFAULT_SLIDESHOW_FPS
        return PixelRate(output.width, output.height, fps, "output.fps")
    if output.fps:
        return PixelRate(output.width, output.height, output.fps, "output.fps")
    return None


def check_pixel_rate(spec: spec_pb2.RenderSpec, max_pixel_rate: int, field: str = "spec") -> None:
    """InvalidArgument naming the frame rate's field when ``spec`` (normalized) asks for more
    than ``max_pixel_rate`` output pixels per second (width x height x fps)."""
    rate = output_pixel_rate(spec)
    if rate is None or rate.per_second <= max_pixel_rate:
        return
    raise InvalidArgument(
        f"{field}.{rate.fps_field}",
        f"{rate.width}x{rate.height} at {rate.fps:g} fps is {rate.per_second:,.0f} pixels per "
        f"second; this service renders at most {max_pixel_rate:,} (width x height x fps): "
        "lower the frame rate or the size",
    )
