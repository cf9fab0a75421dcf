"""The shared RenderSpec validation: every rejection names its field, every accepted spec is
normalized to concrete values within the documented bounds."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from videojob.errors import InvalidArgument
from videojob.limits import (
    AUDIO_CODECS_BY_CONTAINER,
    MAX_DURATION_SECONDS,
    MAX_FPS,
    MAX_HEIGHT,
    MAX_WIDTH,
    MIN_DURATION_SECONDS,
    MIN_FPS,
    VIDEO_CODECS_BY_CONTAINER,
)
from videojob.render.v1 import spec_pb2
from videojob.spec_validation import (
    expected_duration_seconds,
    normalize_spec,
    resolve_media_path,
)


def pattern_spec(**pattern: float) -> spec_pb2.RenderSpec:
    values: dict[str, float] = {"duration_seconds": 2.0, **pattern}
    return spec_pb2.RenderSpec(
        source=spec_pb2.Source(
            test_pattern=spec_pb2.TestPattern(
                duration_seconds=values["duration_seconds"],
                width=int(values.get("width", 0)),
                height=int(values.get("height", 0)),
                fps=values.get("fps", 0.0),
            )
        )
    )


def rejected_field(spec: spec_pb2.RenderSpec) -> str:
    with pytest.raises(InvalidArgument) as caught:
        normalize_spec(spec)
    assert caught.value.field in str(caught.value)
    return caught.value.field


def test_defaults_are_filled_in() -> None:
    spec = normalize_spec(pattern_spec())
    assert spec.output.container == "mp4"
    assert spec.output.video_codec == "h264"
    assert spec.output.audio_codec == "aac"
    assert (spec.source.test_pattern.width, spec.source.test_pattern.height) == (1280, 720)
    assert spec.source.test_pattern.fps == 30
    assert expected_duration_seconds(spec) == 2.0


def test_webm_defaults_to_vp9_and_opus() -> None:
    spec = pattern_spec()
    spec.output.container = "webm"
    normalized = normalize_spec(spec)
    assert (normalized.output.video_codec, normalized.output.audio_codec) == ("vp9", "opus")


def test_missing_source_names_the_source_field() -> None:
    assert rejected_field(spec_pb2.RenderSpec()) == "spec.source"


@pytest.mark.parametrize(
    ("pattern", "field"),
    [
        ({"duration_seconds": 0}, "spec.source.test_pattern.duration_seconds"),
        ({"duration_seconds": -1}, "spec.source.test_pattern.duration_seconds"),
        ({"duration_seconds": math.nan}, "spec.source.test_pattern.duration_seconds"),
        ({"duration_seconds": math.inf}, "spec.source.test_pattern.duration_seconds"),
        (
            {"duration_seconds": MAX_DURATION_SECONDS + 1},
            "spec.source.test_pattern.duration_seconds",
        ),
        ({"width": MAX_WIDTH + 2, "height": 720}, "spec.source.test_pattern.width"),
        ({"width": 1280, "height": MAX_HEIGHT + 2}, "spec.source.test_pattern.height"),
        ({"width": -2, "height": 720}, "spec.source.test_pattern.width"),
        ({"width": 161, "height": 120}, "spec.source.test_pattern.width"),
        ({"fps": MAX_FPS + 1}, "spec.source.test_pattern.fps"),
        ({"fps": -5}, "spec.source.test_pattern.fps"),
        ({"duration_seconds": 6e-246}, "spec.source.test_pattern.duration_seconds"),
        ({"fps": 2e-311}, "spec.source.test_pattern.fps"),
        ({"fps": 0.5}, "spec.source.test_pattern.fps"),
    ],
)
def test_test_pattern_bounds(pattern: dict[str, float], field: str) -> None:
    assert rejected_field(pattern_spec(**pattern)) == field


@pytest.mark.parametrize(
    ("container", "video", "audio", "field"),
    [
        ("avi", "", "", "spec.output.container"),
        ("webm", "h264", "", "spec.output.video_codec"),
        ("webm", "hevc", "", "spec.output.video_codec"),
        ("mp4", "vp9", "", "spec.output.video_codec"),
        ("webm", "vp9", "aac", "spec.output.audio_codec"),
        ("mp4", "h264", "mp3", "spec.output.audio_codec"),
    ],
)
def test_codec_container_pairs(container: str, video: str, audio: str, field: str) -> None:
    spec = pattern_spec()
    output = spec.output
    output.container, output.video_codec, output.audio_codec = container, video, audio
    assert rejected_field(spec) == field


def test_one_dimension_alone_keeps_the_aspect_ratio() -> None:
    for width, height in ((640, 0), (0, 360)):
        spec = pattern_spec()
        spec.output.width, spec.output.height = width, height
        normalized = normalize_spec(spec)
        assert (normalized.output.width, normalized.output.height) == (width, height)


def test_crf_ranges_follow_the_codec() -> None:
    for container, codec, highest in (("mp4", "h264", 51), ("webm", "vp9", 63)):
        spec = pattern_spec()
        spec.output.container, spec.output.video_codec, spec.output.crf = (
            container,
            codec,
            highest,
        )
        assert normalize_spec(spec).output.crf == highest


def test_output_bounds() -> None:
    changes: list[tuple[dict[str, object], str]] = [
        ({"fps": 241.0}, "spec.output.fps"),
        ({"width": 641, "height": 0}, "spec.output.width"),
        ({"crf": 64}, "spec.output.crf"),
        ({"crf": 52}, "spec.output.crf"),
        ({"video_codec": "hevc", "crf": 52}, "spec.output.crf"),
        ({"preset": "; rm -rf /"}, "spec.output.preset"),
        ({"container": "webm", "faststart": True}, "spec.output.faststart"),
    ]
    for values, field in changes:
        spec = pattern_spec()
        for name, value in values.items():
            setattr(spec.output, name, value)
        assert rejected_field(spec) == field


@pytest.mark.parametrize(
    "path",
    ["", "../secret.png", "a/../../b.png", "/etc/passwd", "a\x00b.png", "x" * 1100, "a\nb.png"],
)
def test_slide_paths_that_could_escape_are_rejected(path: str) -> None:
    spec = spec_pb2.RenderSpec(
        source=spec_pb2.Source(
            slideshow=spec_pb2.Slideshow(
                slides=[
                    spec_pb2.Slide(image_path="ok.png", duration_seconds=1),
                    spec_pb2.Slide(image_path=path, duration_seconds=1),
                ]
            )
        )
    )
    assert rejected_field(spec) == "spec.source.slideshow.slides[1].image_path"


def test_too_many_slides() -> None:
    slides = [spec_pb2.Slide(image_path="a.png", duration_seconds=1)] * 501
    spec = spec_pb2.RenderSpec(source=spec_pb2.Source(slideshow=spec_pb2.Slideshow(slides=slides)))
    assert rejected_field(spec) == "spec.source.slideshow.slides"


def test_resolve_media_path_confines_to_the_root(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "clip é.mp4").write_bytes(b"x")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "link.mp4")
    (root / "dir").mkdir()
    os.symlink(root / "loop", root / "loop")

    assert resolve_media_path(root, "clip é.mp4", "f") == (root / "clip é.mp4").resolve()
    for value, problem in [
        ("link.mp4", "outside the media root"),
        ("missing.mp4", "not found"),
        ("dir", "not a regular file"),
        ("loop", "cannot be resolved"),
        ("../outside.mp4", "'..'"),
        (str(outside), "relative"),
    ]:
        with pytest.raises(InvalidArgument, match=problem) as caught:
            resolve_media_path(root, value, "spec.source.transcode.input_path")
        assert caught.value.field == "spec.source.transcode.input_path"


codecs = st.sampled_from(["", "h264", "hevc", "vp9", "av1", "mpeg2", "H264"])
audio_codecs = st.sampled_from(["", "aac", "opus", "mp3"])
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(min_value=-10, max_value=20_000).map(float),
)
sizes = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@st.composite
def render_specs(draw: st.DrawFn) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    kind = draw(st.sampled_from(["test_pattern", "transcode", "slideshow", None]))
    if kind == "test_pattern":
        pattern = spec.source.test_pattern
        pattern.duration_seconds = draw(numbers)
        pattern.width = draw(st.one_of(sizes, st.sampled_from([0, 160, 7680, 7682])))
        pattern.height = draw(st.one_of(sizes, st.sampled_from([0, 120, 4320, 4322])))
        pattern.fps = draw(numbers)
    elif kind == "transcode":
        spec.source.transcode.input_path = draw(st.text(max_size=40))
    elif kind == "slideshow":
        for _ in range(draw(st.integers(min_value=0, max_value=3))):
            spec.source.slideshow.slides.add(
                image_path=draw(st.text(max_size=20)), duration_seconds=draw(numbers)
            )
        spec.source.slideshow.subtitles_path = draw(st.text(max_size=20))
    spec.output.container = draw(st.sampled_from(["", "mp4", "webm", "mkv"]))
    spec.output.video_codec = draw(codecs)
    spec.output.audio_codec = draw(audio_codecs)
    spec.output.width = draw(st.one_of(st.just(0), sizes))
    spec.output.height = draw(st.one_of(st.just(0), sizes))
    spec.output.fps = draw(numbers)
    if draw(st.booleans()):
        spec.output.crf = draw(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    spec.output.faststart = draw(st.booleans())
    return spec


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(render_specs())
def test_generated_specs_are_either_rejected_by_field_or_fully_bounded(
    spec: spec_pb2.RenderSpec,
) -> None:
    try:
        normalized = normalize_spec(spec)
    except InvalidArgument as error:
        assert error.field.startswith("spec.")
        assert error.problem
        return
    output = normalized.output
    assert output.video_codec in VIDEO_CODECS_BY_CONTAINER[output.container]
    assert output.audio_codec in AUDIO_CODECS_BY_CONTAINER[output.container]
    assert 0 <= output.width <= MAX_WIDTH and 0 <= output.height <= MAX_HEIGHT
    assert output.fps == 0 or MIN_FPS <= output.fps <= MAX_FPS
    duration = expected_duration_seconds(normalized)
    if duration is not None:
        assert MIN_DURATION_SECONDS <= duration <= MAX_DURATION_SECONDS
    if normalized.source.HasField("test_pattern"):
        pattern = normalized.source.test_pattern
        assert 0 < pattern.width <= MAX_WIDTH and 0 < pattern.height <= MAX_HEIGHT
        assert MIN_FPS <= pattern.fps <= MAX_FPS
