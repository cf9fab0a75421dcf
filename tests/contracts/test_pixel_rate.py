"""The operator's limit on output pixels per second (width x height x frames per second): what
a spec asks for, the default (4K at up to 120 fps, 8K at up to 30 fps), the field a refusal
names (the frame rate: ``output.fps`` when set, else the test pattern's own), and the export
service's flag."""

from __future__ import annotations

import pytest

from export_service.__main__ import FLAGS as EXPORT_FLAGS
from export_service.__main__ import config_from_flags
from videojob import limits
from videojob.errors import InvalidArgument
from videojob.flags import FlagError
from videojob.render.v1 import spec_pb2
from videojob.spec_validation import check_pixel_rate, normalize_spec, output_pixel_rate

DEFAULT = limits.DEFAULT_MAX_PIXEL_RATE


def pattern(size: tuple[int, int], rate: float, **output: float) -> spec_pb2.RenderSpec:
    """A test pattern of ``size`` at ``rate`` fps, with these ``output`` fields."""
    spec = spec_pb2.RenderSpec()
    spec.source.test_pattern.duration_seconds = 1.0
    spec.source.test_pattern.width, spec.source.test_pattern.height = size
    spec.source.test_pattern.fps = rate
    for name, value in output.items():
        setattr(spec.output, name, value)
    return normalize_spec(spec)


def slideshow(**output: float) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.slideshow.slides.add(image_path="a.png", duration_seconds=1.0)
    for name, value in output.items():
        setattr(spec.output, name, value)
    return normalize_spec(spec)


def transcode(**output: float) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = "clip.mp4"
    for name, value in output.items():
        setattr(spec.output, name, value)
    return normalize_spec(spec)


def refused_field(spec: spec_pb2.RenderSpec, limit: int = DEFAULT) -> str:
    with pytest.raises(InvalidArgument) as caught:
        check_pixel_rate(spec, limit)
    assert "pixels per second" in caught.value.problem
    assert f"{limit:,}" in caught.value.problem
    return caught.value.field


def test_the_default_passes_4k_at_60_and_120_fps_and_8k_at_30() -> None:
    assert DEFAULT >= 3840 * 2160 * 120
    assert DEFAULT >= limits.MAX_WIDTH * limits.MAX_HEIGHT * 30
    for spec in (
        pattern((3840, 2160), 60),
        pattern((3840, 2160), 120),
        pattern((limits.MAX_WIDTH, limits.MAX_HEIGHT), 30),
        pattern((1920, 1080), limits.MAX_FPS),
        pattern((160, 120), 10),
    ):
        check_pixel_rate(spec, DEFAULT)


def test_8k_at_240_fps_is_refused_naming_the_frame_rate() -> None:
    assert refused_field(pattern((7680, 4320), 240)) == "spec.source.test_pattern.fps"
    assert refused_field(pattern((3840, 2160), 240)) == "spec.source.test_pattern.fps"
    # The output's frame rate is the one that counts where it is set.
    assert refused_field(pattern((7680, 4320), 10, fps=240.0)) == "spec.output.fps"
    assert refused_field(pattern((160, 120), 10, width=7680, height=4320, fps=60.0)) == (
        "spec.output.fps"
    )


def test_the_size_is_the_outputs() -> None:
    # Scaled down from 8K to 1080p, 240 fps is within the default.
    check_pixel_rate(pattern((7680, 4320), 240, width=1920, height=1080), DEFAULT)
    # One dimension alone: the other follows the pattern's aspect ratio.
    rate = output_pixel_rate(pattern((1280, 720), 60, width=7680))
    assert rate is not None and (rate.width, rate.height, rate.fps) == (7680, 4320, 60)
    rate = output_pixel_rate(pattern((1280, 720), 60, height=4320))
    assert rate is not None and (rate.width, rate.height) == (7680, 4320)


def test_what_depends_on_the_input_files_is_left_to_them() -> None:
    # A slideshow's size is its first image's unless the output sets both dimensions; its
    # frame rate is 25 unless output.fps is set.
    assert output_pixel_rate(slideshow()) is None
    assert output_pixel_rate(slideshow(width=7680, fps=240.0)) is None
    rate = output_pixel_rate(slideshow(width=7680, height=4320))
    assert rate is not None and rate.fps == limits.DEFAULT_SLIDESHOW_FPS
    assert refused_field(slideshow(width=7680, height=4320, fps=60.0)) == "spec.output.fps"
    assert refused_field(slideshow(width=7680, height=4320), limit=10**6) == "spec.output.fps"
    # A transcode keeps the input's size and timing unless the output sets all three.
    assert output_pixel_rate(transcode(width=7680, height=4320)) is None
    assert output_pixel_rate(transcode(fps=240.0)) is None
    assert refused_field(transcode(width=7680, height=4320, fps=240.0)) == "spec.output.fps"


def test_the_export_flag() -> None:
    assert config_from_flags(EXPORT_FLAGS.parse([], {})).max_pixel_rate == DEFAULT
    flags = EXPORT_FLAGS.parse([], {"EXPORT_MAX_PIXEL_RATE": "2073600"})
    assert config_from_flags(flags).max_pixel_rate == 1920 * 1080
    for bad in ("0", "-5", "1.5e9", "lots"):
        with pytest.raises(FlagError) as caught:
            EXPORT_FLAGS.parse(["--max-pixel-rate", bad], {})
        assert caught.value.message.startswith("--max-pixel-rate "), caught.value.message
