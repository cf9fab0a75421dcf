"""CheckInputs answers what a split's planner needs of the source: its duration, frame rate,
whether its frames are evenly spaced, whether it has audio (sources made with FFmpeg here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from render_service.source_facts import SCANNED_SECONDS
from tests.render.conftest import Running, pattern_spec, run_ffmpeg
from videojob.render.v1 import render_pb2, spec_pb2


def transcode(input_path: str) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = input_path
    return spec


async def facts(service: Running, spec: spec_pb2.RenderSpec) -> render_pb2.CheckInputsResponse:
    return await service.stub.CheckInputs(render_pb2.CheckInputsRequest(spec=spec))


def make(
    path: Path,
    rate: str,
    *,
    audio: bool,
    video_filter: str = "",
    seconds: float = 3,
    preset: str = "ultrafast",
) -> None:
    args = ["-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={rate}:duration={seconds:g}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=sample_rate=48000:duration=3", "-c:a", "aac"]
    if video_filter:
        args += ["-vf", video_filter, "-fps_mode", "vfr", "-enc_time_base", "1/1000"]
    args += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", str(path)]
    run_ffmpeg(*args)


async def test_a_test_pattern_is_as_its_spec_makes_it(service: Running) -> None:
    answer = await facts(service, pattern_spec(4.0, fps=12.0))

    assert answer.duration_seconds == 4.0
    assert answer.fps == 12.0
    assert answer.has_audio and not answer.variable_frame_rate


async def test_a_constant_rate_source_with_audio(service: Running) -> None:
    make(service.config.media_root / "cfr.mp4", "25", audio=True)
    answer = await facts(service, transcode("cfr.mp4"))

    assert answer.duration_seconds == pytest.approx(3.0, abs=0.05)
    assert answer.fps == 25.0
    assert answer.has_audio and not answer.variable_frame_rate


async def test_b_frames_cut_by_the_scan_are_no_gap(service: Running) -> None:
    # Longer than the scanned seconds, with B-frames: the scan stops in decoding order, so the
    # frames shown just before its end are missing from it.
    seconds = SCANNED_SECONDS + 2
    make(service.config.media_root / "long.mp4", "10", audio=False, seconds=seconds, preset="fast")
    answer = await facts(service, transcode("long.mp4"))

    assert answer.duration_seconds == pytest.approx(seconds, abs=0.05)
    assert answer.fps == 10.0
    assert not answer.variable_frame_rate


async def test_an_ntsc_rate_is_its_exact_fraction(service: Running) -> None:
    make(service.config.media_root / "ntsc.mp4", "30000/1001", audio=False)
    answer = await facts(service, transcode("ntsc.mp4"))

    assert answer.fps == pytest.approx(30000 / 1001, rel=1e-9)
    assert not answer.has_audio and not answer.variable_frame_rate


async def test_unevenly_spaced_frames_are_a_variable_rate(service: Running) -> None:
    # Every other frame 20 ms late (in milliseconds): spacings of 60 and 20 ms.
    make(
        service.config.media_root / "vfr.mp4",
        "25",
        audio=True,
        video_filter="settb=1/1000,setpts=N*40+mod(N\\,2)*20",
    )
    answer = await facts(service, transcode("vfr.mp4"))

    assert answer.variable_frame_rate
    assert answer.fps == pytest.approx(25.0, rel=0.05)
    assert answer.has_audio


@pytest.mark.parametrize(
    ("name", "video_seconds", "audio_seconds", "codecs"),
    [
        # The audio outlasts the video: the container lasts as long as the audio.
        ("longer-audio.mp4", 2, 4, ("libx264", "aac")),
        ("longer-audio.webm", 2, 4, ("libvpx-vp9", "libopus")),
        # Further than the read tail's 10 s: found by the video's last keyframe.
        ("much-longer-audio.mkv", 2, 14, ("libx264", "aac")),
        # MPEG-TS seeks by bytes and finds no video there: the whole stream is read.
        ("longer-audio.ts", 2, 14, ("libx264", "aac")),
        # The video outlasts the audio: the container lasts as long as the video.
        ("longer-video.mp4", 3, 1, ("libx264", "aac")),
    ],
)
async def test_the_videos_own_length_is_read_from_its_stream(
    service: Running, name: str, video_seconds: float, audio_seconds: float, codecs: tuple[str, str]
) -> None:
    video_codec, audio_codec = codecs
    run_ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=160x90:rate=10:duration={video_seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=sample_rate=48000:duration={audio_seconds}",
        "-c:v",
        video_codec,
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        audio_codec,
        str(service.config.media_root / name),
    )
    answer = await facts(service, transcode(name))

    # (MPEG-TS's header estimates its duration from its start: a few tenths short.)
    assert answer.duration_seconds == pytest.approx(max(video_seconds, audio_seconds), abs=0.3)
    # Within a tenth of a frame of the video's end (a container's millisecond time base).
    assert answer.video_duration_seconds == pytest.approx(video_seconds, abs=0.03)
    assert answer.fps == 10.0 and answer.has_audio


async def test_a_pattern_is_as_long_as_its_video(service: Running) -> None:
    answer = await facts(service, pattern_spec(4.0, fps=12.0))
    assert answer.video_duration_seconds == 4.0
