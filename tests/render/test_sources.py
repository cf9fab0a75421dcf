"""Transcode and slideshow sources, every output codec, faststart, and subtitle-path escaping."""

from __future__ import annotations

import struct
from pathlib import Path

import grpc
import pytest

from render_service.ffmpeg_command import escape_filter_value
from tests.render.conftest import (
    Running,
    collect,
    kind,
    output_entries,
    pattern_spec,
    render_request,
    run_ffmpeg,
)
from tests.support.media import make_clip, media_duration, media_header
from videojob.grpc_errors import field_violation
from videojob.render.v1 import render_pb2, spec_pb2


def top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, name = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        boxes.append(name.decode("latin-1"))
        if size < 8:
            break
        offset += size
    return boxes


async def render_ok(service: Running, render_id: str, spec: spec_pb2.RenderSpec) -> Path:
    events = await collect(service.stub.Render(render_request(render_id, spec)))
    assert kind(events[-1]) == "completed", events[-1]
    return Path(events[-1].completed.output_path)


@pytest.mark.parametrize(
    ("container", "video_codec", "audio_codec", "header_video", "header_audio"),
    [
        ("webm", "vp9", "opus", "Video: vp9", "Audio: opus"),
        ("mp4", "h264", "aac", "Video: h264", "Audio: aac"),
        ("mp4", "hevc", "aac", "Video: hevc", "Audio: aac"),
        ("mp4", "h264", "opus", "Video: h264", "Audio: opus"),
        ("webm", "av1", "opus", "Video: av1", "Audio: opus"),
    ],
)
async def test_output_codecs(
    service: Running,
    container: str,
    video_codec: str,
    audio_codec: str,
    header_video: str,
    header_audio: str,
) -> None:
    spec = pattern_spec(1.0, container=container, video_codec=video_codec, audio_codec=audio_codec)
    output = await render_ok(service, f"codec-{video_codec}-{audio_codec}-{container}", spec)
    assert output.suffix == f".{container}"
    header = media_header(output)
    assert header_video in header and header_audio in header
    assert abs(media_duration(output) - 1.0) <= 0.5


async def test_faststart_puts_the_moov_atom_first(service: Running) -> None:
    fast = await render_ok(service, "fast-1", pattern_spec(1.0, faststart=True))
    slow = await render_ok(service, "slow-1", pattern_spec(1.0, faststart=False))
    fast_boxes, slow_boxes = top_level_boxes(fast), top_level_boxes(slow)
    assert fast_boxes.index("moov") < fast_boxes.index("mdat")
    assert slow_boxes.index("mdat") < slow_boxes.index("moov")


async def test_transcode_reads_the_duration_from_the_input_header(service: Running) -> None:
    media = service.config.media_root
    (media / "clips").mkdir()
    run_ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1",
        "-f", "lavfi", "-i", "sine=duration=1",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
        str(media / "clips" / "in put.mp4"),
    )  # fmt: skip
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = "clips/in put.mp4"
    spec.output.container = "webm"
    spec.output.preset = "ultrafast"
    spec.output.width, spec.output.height = 96, 72
    output = await render_ok(service, "transcode-1", spec)
    assert abs(media_duration(output) - 1.0) <= 0.5
    assert "96x72" in media_header(output)


async def test_transcode_of_a_file_that_is_not_media_fails_as_invalid_input(
    service: Running,
) -> None:
    (service.config.media_root / "notes.mp4").write_text("this is not a video")
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = "notes.mp4"
    events = await collect(service.stub.Render(render_request("notmedia-1", spec)))
    assert kind(events[-1]) == "failed"
    assert events[-1].failed.code == "INVALID_INPUT"
    assert "spec.source.transcode.input_path" in events[-1].failed.message
    assert events[-1].failed.field == "spec.source.transcode.input_path"
    assert output_entries(service.config.output_dir) == []


@pytest.mark.parametrize(
    "subtitles_name",
    [
        "it's: one, two.srt",
        "brackets [x];y=z \\ back'slash:,.srt",
        "trailing space.srt ",
    ],
)
async def test_slideshow_with_audio_and_subtitles(service: Running, subtitles_name: str) -> None:
    media = service.config.media_root
    run_ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48", "-frames:v", "1", str(media / "one.png"))
    run_ffmpeg(
        "-f", "lavfi", "-i", "color=c=blue:s=80x60", "-frames:v", "1", str(media / "two.png")
    )
    run_ffmpeg("-f", "lavfi", "-i", "sine=duration=1", str(media / "tone.wav"))
    (media / subtitles_name).write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    spec = spec_pb2.RenderSpec()
    show = spec.source.slideshow
    show.slides.add(image_path="one.png", duration_seconds=1.0)
    show.slides.add(image_path="two.png", duration_seconds=1.5)
    show.audio_path = "tone.wav"
    show.subtitles_path = subtitles_name
    spec.output.preset = "ultrafast"
    spec.output.fps = 10

    output = await render_ok(service, "slides-1", spec)

    assert abs(media_duration(output) - 2.5) <= 0.5
    header = media_header(output)
    assert "64x48" in header and "Audio: aac" in header


async def test_a_slideshow_may_show_the_same_image_twice(service: Running) -> None:
    """The same image for the same time in two slides is one input read twice (FFmpeg's graph
    needs a split for that), not an INTERNAL failure."""
    media = service.config.media_root
    run_ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48", "-frames:v", "1", str(media / "one.png"))
    run_ffmpeg(
        "-f", "lavfi", "-i", "color=c=blue:s=64x48", "-frames:v", "1", str(media / "two.png")
    )
    spec = spec_pb2.RenderSpec()
    for name in ("one.png", "two.png", "one.png", "one.png"):
        spec.source.slideshow.slides.add(image_path=name, duration_seconds=0.5)
    spec.output.preset = "ultrafast"
    spec.output.fps = 10

    output = await render_ok(service, "slides-again", spec)

    assert abs(media_duration(output) - 2.0) <= 0.5


async def test_subtitles_path_cannot_inject_filter_options(service: Running) -> None:
    """Unescaped, this name would open ``x.srt`` (absent) with extra options and fail; escaped,
    it names the file that exists."""
    media = service.config.media_root
    run_ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48", "-frames:v", "1", str(media / "one.png"))
    name = "x.srt:force_style='Fontsize=90',drawbox[v];[v]null"
    (media / name).write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    assert not (media / "x.srt").exists()
    spec = spec_pb2.RenderSpec()
    spec.source.slideshow.slides.add(image_path="one.png", duration_seconds=1.0)
    spec.source.slideshow.subtitles_path = name
    spec.output.preset = "ultrafast"

    output = await render_ok(service, "inject-1", spec)

    assert abs(media_duration(output) - 1.0) <= 0.5


@pytest.mark.parametrize("subtitles_name", ["a.png", "clip.mp4", "notes.srt"])
async def test_subtitles_that_are_not_text_subtitles_are_invalid_input(
    service: Running, subtitles_name: str
) -> None:
    """Checked with the other inputs, before ffmpeg renders anything: an image, a video without
    subtitles, a text file that is no subtitles."""
    media = service.config.media_root
    run_ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48", "-frames:v", "1", str(media / "a.png"))
    make_clip(media / "clip.mp4")
    (media / "notes.srt").write_text("just some notes\n")
    spec = spec_pb2.RenderSpec()
    spec.source.slideshow.slides.add(image_path="a.png", duration_seconds=1.0)
    spec.source.slideshow.subtitles_path = subtitles_name
    spec.output.preset = "ultrafast"
    field = "spec.source.slideshow.subtitles_path"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CheckInputs(render_pb2.CheckInputsRequest(spec=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = field_violation(caught.value)
    assert violation is not None and violation.field == field, caught.value.details()
    assert subtitles_name in violation.description
    assert "subtitles" in violation.description

    events = await collect(service.stub.Render(render_request("subs-bad-1", spec)))
    failed = events[-1]
    assert kind(failed) == "failed", failed
    assert (failed.failed.code, failed.failed.field) == ("INVALID_INPUT", field), failed
    assert not any(e.progress.stage == "Rendering" for e in events if kind(e) == "progress")
    assert output_entries(service.config.output_dir) == []


def test_escape_filter_value_escapes_both_levels() -> None:
    value = "/m/a'b:c,d[e]f;g=h\\i j"
    assert escape_filter_value(value) == r"/m/a\\\'b\\:c\,d\[e\]f\;g\\=h\\\\i\\\ j"
    assert escape_filter_value("plain/path.srt") == "plain/path.srt"
