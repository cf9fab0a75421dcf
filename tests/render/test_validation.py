"""Every bad input is refused at the Render call with INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.render.conftest import (
    Running,
    collect,
    output_entries,
    pattern_spec,
    render_request,
    run_ffmpeg,
)
from videojob.grpc_errors import field_violation
from videojob.render.v1 import spec_pb2

Mutator = Callable[[spec_pb2.RenderSpec], None]


def _set(path: str, value: object) -> Mutator:
    def mutate(spec: spec_pb2.RenderSpec) -> None:
        *parents, leaf = path.split(".")
        target = spec
        for name in parents:
            target = getattr(target, name)
        setattr(target, leaf, value)

    return mutate


def _transcode(input_path: str) -> Mutator:
    def mutate(spec: spec_pb2.RenderSpec) -> None:
        spec.source.transcode.input_path = input_path

    return mutate


def _slides(*paths: str, audio: str = "", subtitles: str = "") -> Mutator:
    def mutate(spec: spec_pb2.RenderSpec) -> None:
        show = spec.source.slideshow
        for path in paths:
            show.slides.add(image_path=path, duration_seconds=1.0)
        show.audio_path = audio
        show.subtitles_path = subtitles

    return mutate


SPEC_CASES: list[tuple[str, Mutator, str]] = [
    ("webm+h264", _set("output.video_codec", "h264"), "spec.output.video_codec"),
    ("webm+aac", _set("output.audio_codec", "aac"), "spec.output.audio_codec"),
    ("mp4+vp9", _set("output.video_codec", "vp9"), "spec.output.video_codec"),
    ("avi", _set("output.container", "avi"), "spec.output.container"),
    ("mp3 codec", _set("output.audio_codec", "mp3"), "spec.output.audio_codec"),
    ("zero duration", _set("source.test_pattern.duration_seconds", 0.0), "duration_seconds"),
    ("negative duration", _set("source.test_pattern.duration_seconds", -3.0), "duration_seconds"),
    (
        "nan duration",
        _set("source.test_pattern.duration_seconds", float("nan")),
        "duration_seconds",
    ),
    ("over 4 h", _set("source.test_pattern.duration_seconds", 4 * 3600 + 1.0), "duration_seconds"),
    ("too wide", _set("source.test_pattern.width", 7682), "spec.source.test_pattern.width"),
    ("too tall", _set("source.test_pattern.height", 4322), "spec.source.test_pattern.height"),
    ("odd width", _set("source.test_pattern.width", 161), "spec.source.test_pattern.width"),
    ("negative height", _set("source.test_pattern.height", -120), "test_pattern.height"),
    ("fps over 240", _set("source.test_pattern.fps", 241.0), "spec.source.test_pattern.fps"),
    ("negative fps", _set("source.test_pattern.fps", -1.0), "spec.source.test_pattern.fps"),
    ("output too wide", _set("output.width", 7690), "spec.output.width"),
    ("output fps", _set("output.fps", 500.0), "spec.output.fps"),
    ("crf", _set("output.crf", 99), "spec.output.crf"),
    ("preset", _set("output.preset", "ludicrous"), "spec.output.preset"),
    ("dotdot", _transcode("../outside.mp4"), "spec.source.transcode.input_path"),
    ("absolute", _transcode("/etc/passwd"), "spec.source.transcode.input_path"),
    ("missing", _transcode("nothing-here.mp4"), "spec.source.transcode.input_path"),
    ("empty path", _transcode(""), "spec.source.transcode.input_path"),
    ("symlink out", _transcode("escape.mp4"), "spec.source.transcode.input_path"),
    ("slide dotdot", _slides("a.png", "x/../../b.png"), "spec.source.slideshow.slides[1]"),
    ("slide missing", _slides("a.png", "gone.png"), "spec.source.slideshow.slides[1].image_path"),
    ("audio missing", _slides("a.png", audio="none.wav"), "spec.source.slideshow.audio_path"),
    ("subs absolute", _slides("a.png", subtitles="/tmp/x.srt"), "slideshow.subtitles_path"),
    ("subs symlink", _slides("a.png", subtitles="escape.mp4"), "slideshow.subtitles_path"),
]


@pytest.fixture
def media(service: Running, tmp_path: Path) -> Path:
    media = service.config.media_root
    run_ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32", "-frames:v", "1", str(media / "a.png"))
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"secret")
    os.symlink(outside, media / "escape.mp4")
    return media


@pytest.mark.parametrize(("name", "mutate", "field"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
async def test_bad_spec_is_invalid_argument_naming_the_field(
    service: Running, media: Path, name: str, mutate: Mutator, field: str
) -> None:
    spec = pattern_spec(1.0, container="webm" if name.startswith("webm") else "mp4")
    mutate(spec)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(service.stub.Render(render_request("bad-1", spec)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
    violation = field_violation(caught.value)
    assert violation is not None and field in violation.field, violation
    assert output_entries(service.config.output_dir) == []


@pytest.mark.parametrize(
    "render_id", ["", "-leading-dash", "../etc", "a/b", "a.b", "x" * 129, "sp ace", "ünï"]
)
async def test_bad_render_id_is_invalid_argument(service: Running, render_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(service.stub.Render(render_request(render_id, pattern_spec(1.0))))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("render_id:")


async def test_missing_source_names_the_field(service: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(service.stub.Render(render_request("nosrc-1", spec_pb2.RenderSpec())))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.source" in (caught.value.details() or "")
