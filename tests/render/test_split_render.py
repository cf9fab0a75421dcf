"""Split rendering on the render service: parts rendered through the real gRPC server on the
output's frame timeline, joined without re-encoding the video, the audio encoded once, and the
checks that catch a lost, repeated or misplaced frame. Every file is read back here with FFmpeg
independently of the service's own scan."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import grpc
import pytest

from render_service.config import RenderConfig
from render_service.failures import FailureCode, RenderFailure
from render_service.split_verification import verify_join, verify_part
from tests.render.conftest import (
    Running,
    StartServer,
    collect,
    kind,
    pattern_spec,
    render_request,
    run_ffmpeg,
)
from tests.support.split import (
    FPS,
    PART_FRAMES,
    SECONDS,
    TOTAL,
    audio_seconds,
    decoded_frames,
    ffmpeg_out,
    join_spec,
    part_spec,
    stored_packets,
)
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.render.v1 import render_pb2, spec_pb2


async def render(
    service: Running, render_id: str, spec: spec_pb2.RenderSpec
) -> list[render_pb2.RenderEvent]:
    return await collect(service.stub.Render(render_request(render_id, spec)))


async def render_parts(
    service: Running, base: spec_pb2.RenderSpec, name: str, counts: list[int] = PART_FRAMES
) -> list[str]:
    """Renders every part at once; checks each one's events; returns their output paths."""
    specs = [part_spec(base, index, counts) for index in range(len(counts))]
    streams = await asyncio.gather(
        *(render(service, f"{name}-part{index}", spec) for index, spec in enumerate(specs))
    )
    paths = []
    for count, events in zip(counts, streams, strict=True):
        assert kind(events[-1]) == "completed", events[-1]
        progress = [event.progress for event in events[:-1]]
        frames = [p.frame for p in progress if p.stage in ("Rendering", "Finalizing")]
        assert max(frames) == count, "a part's frame counts its own frames"
        percents = [p.percent for p in progress]
        assert percents == sorted(percents) and max(percents) <= 99
        assert {"Rendering", "Verifying"} <= {p.stage for p in progress}
        paths.append(events[-1].completed.output_path)
    return paths


def assert_evenly_timed(path: Path, codec: str, audio_codec: str) -> None:
    """Exactly TOTAL video frames one frame apart from the first (no gap, no overlap at a
    join), and the audio as long as the video within one frame."""
    streams = stored_packets(path)
    time_base, pts, video_codec = streams["video"]
    assert video_codec == codec
    assert len(pts) == TOTAL
    step = Fraction(1) / Fraction(FPS) / time_base
    assert step.denominator == 1
    ordered = sorted(pts)
    assert [p - ordered[0] for p in ordered] == [int(step) * i for i in range(TOTAL)]
    assert streams["audio"][2] == audio_codec
    assert abs(audio_seconds(path) - SECONDS) <= 1 / FPS


def assert_join_events(events: list[render_pb2.RenderEvent]) -> None:
    assert kind(events[-1]) == "completed", events[-1]
    progress = [event.progress for event in events[:-1]]
    joining = [p for p in progress if p.stage == "Joining"]
    assert joining and all(p.percent == 95 for p in joining)
    shares = [p.stage_progress for p in joining]
    assert shares == sorted(shares) and shares[-1] > shares[0]
    assert "Rendering" not in {p.stage for p in progress}
    assert progress[-1].stage == "Verifying" and progress[-1].percent == 99


def whole_spec(container: str, video_codec: str, audio_codec: str, crf: int) -> spec_pb2.RenderSpec:
    spec = pattern_spec(SECONDS, fps=FPS, container=container, video_codec=video_codec)
    spec.output.audio_codec = audio_codec
    spec.output.crf = crf
    return spec


async def test_h264_mp4_parts_join_into_the_whole_renders_frames_with_aac(
    service: Running,
) -> None:
    # Lossless (crf 0): the joined file's frames must be the whole render's, bit for bit.
    base = whole_spec("mp4", "h264", "aac", crf=0)
    base.output.faststart = True
    paths = await render_parts(service, base, "h264")
    joined = await render(service, "h264-join", join_spec(base, paths, TOTAL))
    whole = await render(service, "h264-whole", base)

    assert_join_events(joined)
    output = Path(joined[-1].completed.output_path)
    assert output == (service.config.output_dir / "h264-join.mp4").resolve()
    assert_evenly_timed(output, "h264", "aac")
    reference = decoded_frames(Path(whole[-1].completed.output_path))
    assert len(reference) == TOTAL
    assert decoded_frames(output) == reference


def psnr_per_frame(path: Path, reference: Path, skip_reference: int = 0) -> list[float]:
    graph = (
        f"[1:v]trim=start_frame={skip_reference},setpts=PTS-STARTPTS[r];[0:v][r]psnr=stats_file=-"
    )
    out = subprocess.run(
        [
            tool_ffmpeg(),
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-i",
            str(reference),
            "-lavfi",
            graph,
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    values = []
    for line in out.splitlines():
        fields = dict(item.split(":", 1) for item in line.split() if ":" in item)
        if "psnr_avg" in fields:
            values.append(float(fields["psnr_avg"]) if fields["psnr_avg"] != "inf" else 100.0)
    return values


@pytest.mark.parametrize(
    ("container", "video_codec", "audio_codec", "preset"),
    [
        ("webm", "vp9", "opus", "ultrafast"),
        # B-frames (with pyramid): decode order differs from presentation order in every part.
        ("mp4", "h264", "aac", "medium"),
        ("webm", "av1", "opus", "ultrafast"),
    ],
)
async def test_lossy_parts_join_frame_for_frame(
    service: Running, container: str, video_codec: str, audio_codec: str, preset: str
) -> None:
    base = whole_spec(container, video_codec, audio_codec, crf=4)
    base.output.preset = preset
    paths = await render_parts(service, base, video_codec)
    joined = await render(service, f"{video_codec}-join", join_spec(base, paths, TOTAL))
    whole = await render(service, f"{video_codec}-whole", base)

    assert_join_events(joined)
    output = Path(joined[-1].completed.output_path)
    assert_evenly_timed(output, video_codec, audio_codec)
    if video_codec == "h264":
        assert any(stored_reordered(Path(path)) for path in paths), "no B-frames in the parts"
    reference = Path(whole[-1].completed.output_path)
    aligned = psnr_per_frame(output, reference)
    assert len(aligned) == TOTAL
    # One frame off is far below what the same frame encoded twice scores.
    shifted = psnr_per_frame(output, reference, skip_reference=1)
    assert min(aligned) > 35 > max(shifted[: TOTAL - 1]), (min(aligned), max(shifted))


def stored_reordered(path: Path) -> bool:
    """Whether some video packet is stored before it is shown (dts < pts: a B-frame stream)."""
    out = ffmpeg_out("-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-")
    packets = [line.split(",") for line in out.splitlines() if line.startswith("0,")]
    return any(int(fields[1]) < int(fields[2]) for fields in packets)


def make_source(path: Path, *, keyframe_every: int = 7, audio: bool = True) -> Path:
    args = ["-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={FPS:g}:duration={SECONDS:g}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=300:sample_rate=48000:duration={SECONDS:g}"]
    args += ["-c:v", "libx264", "-preset", "fast", "-bf", "3", "-g", str(keyframe_every)]
    args += ["-keyint_min", str(keyframe_every), "-sc_threshold", "0", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac"]
    run_ffmpeg(*args, str(path))
    return path


def transcode_spec(input_path: str, crf: int = 0) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = input_path
    spec.output.container = "mp4"
    spec.output.video_codec = "h264"
    spec.output.preset = "ultrafast"
    spec.output.crf = crf
    return spec


# MPEG-TS: the source's timestamps start at 1.4 s, not 0.
@pytest.mark.parametrize("source_name", ["gop7.mp4", "gop7.ts"])
async def test_a_source_whose_keyframes_fall_off_the_plan_joins_to_its_own_frames(
    service: Running, source_name: str
) -> None:
    source = make_source(service.config.media_root / source_name)
    base = transcode_spec(source_name)
    paths = await render_parts(service, base, "gop7")
    joined = await render(service, "gop7-join", join_spec(base, paths, TOTAL))

    assert_join_events(joined)
    output = Path(joined[-1].completed.output_path)
    assert_evenly_timed(output, "h264", "aac")
    assert decoded_frames(output) == decoded_frames(source)


def past_the_plan(spec: spec_pb2.RenderSpec) -> None:
    spec.part.frame_count += 1


def one_part(spec: spec_pb2.RenderSpec) -> None:
    spec.part.count = 1
    spec.part.index = 0


def index_past_count(spec: spec_pb2.RenderSpec) -> None:
    spec.part.index = spec.part.count


def no_rate(spec: spec_pb2.RenderSpec) -> None:
    spec.part.fps = 0


def padding_a_middle_part(spec: spec_pb2.RenderSpec) -> None:
    spec.part.index = 1
    spec.part.first_frame = PART_FRAMES[0]
    spec.part.frame_count = PART_FRAMES[1]
    spec.part.pad_frames = 1


def padding_every_frame(spec: spec_pb2.RenderSpec) -> None:
    spec.part.pad_frames = spec.part.frame_count


def one_path(spec: spec_pb2.RenderSpec) -> None:
    spec.ClearField("part")
    spec.join.part_paths.append("only.mp4")
    spec.join.total_frames = TOTAL
    spec.join.fps = FPS


def no_frames(spec: spec_pb2.RenderSpec) -> None:
    one_path(spec)
    spec.join.part_paths.append("other.mp4")
    spec.join.total_frames = 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (past_the_plan, "spec.part.frame_count"),
        (one_part, "spec.part.count"),
        (index_past_count, "spec.part.index"),
        (no_rate, "spec.part.fps"),
        (padding_a_middle_part, "spec.part.pad_frames"),
        (padding_every_frame, "spec.part.pad_frames"),
        (one_path, "spec.join.part_paths"),
        (no_frames, "spec.join.total_frames"),
    ],
)
async def test_a_part_or_join_that_cannot_be_rendered_is_refused_naming_the_field(
    service: Running, change: Callable[[spec_pb2.RenderSpec], None], field: str
) -> None:
    spec = part_spec(pattern_spec(SECONDS, fps=FPS), 2, PART_FRAMES)
    change(spec)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await render(service, "refused", spec)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")


async def test_a_part_the_source_cannot_fill_fails_clearly(service: Running) -> None:
    make_source(service.config.media_root / "short.mp4")
    base = transcode_spec("short.mp4")
    # A plan made for a source five times as long: the last part starts past the end, the one
    # before it runs past the end.
    counts = [TOTAL, TOTAL, TOTAL * 3]
    past = await render(service, "past-end", part_spec(base, 2, counts))
    short = await render(service, "short-part", part_spec(base, 1, [TOTAL // 2, TOTAL, TOTAL * 4]))

    assert kind(past[-1]) == "failed"
    assert past[-1].failed.code == "INVALID_INPUT"
    assert "spec.part.first_frame" in past[-1].failed.message
    assert kind(short[-1]) == "failed"
    assert short[-1].failed.code == "VERIFICATION_FAILED"
    assert f"decodes to {TOTAL - TOTAL // 2} frames, not its {TOTAL}" in short[-1].failed.message
    assert "the source ends before them" in short[-1].failed.message


async def test_a_join_missing_a_part_fails_naming_the_frames(service: Running) -> None:
    base = whole_spec("mp4", "h264", "aac", crf=30)
    paths = await render_parts(service, base, "missing")
    events = await render(service, "missing-join", join_spec(base, [paths[0], paths[2]], TOTAL))

    assert kind(events[-1]) == "failed"
    assert events[-1].failed.code == "VERIFICATION_FAILED"
    message = events[-1].failed.message
    assert f"hold {PART_FRAMES[0] + PART_FRAMES[2]} frames" in message and str(TOTAL) in message
    assert not (service.config.output_dir / "missing-join.mp4").exists()


async def test_a_join_outside_the_output_directory_is_refused(
    service: Running, tmp_path: Path
) -> None:
    base = whole_spec("mp4", "h264", "aac", crf=30)
    paths = await render_parts(service, base, "outside")
    elsewhere = tmp_path / "elsewhere.mp4"
    await asyncio.to_thread(shutil.copyfile, paths[1], elsewhere)
    events = await render(
        service, "outside-join", join_spec(base, [paths[0], str(elsewhere), paths[2]], TOTAL)
    )

    assert kind(events[-1]) == "failed"
    assert events[-1].failed.code == "INVALID_INPUT"
    assert "spec.join.part_paths[1]" in events[-1].failed.message


def concat(
    paths: list[str], durations: list[float], listing: Path, output: Path, *audio: str
) -> None:
    """Joins ``paths`` as a join that trusts ``durations`` would, muxing ``audio`` args."""
    listing.write_text(
        "ffconcat version 1.0\n"
        + "".join(
            f"file '{path}'\nduration {seconds}\n"
            for path, seconds in zip(paths, durations, strict=True)
        )
    )
    run_ffmpeg(
        "-f", "concat", "-safe", "0", "-i", str(listing), *audio, "-c:v", "copy", str(output)
    )


async def test_the_join_check_passes_an_exact_join_and_finds_a_gap_or_short_audio(
    service: Running, tmp_path: Path
) -> None:
    base = whole_spec("mp4", "h264", "aac", crf=30)
    paths = await render_parts(service, base, "gap")
    exact = [count / FPS for count in PART_FRAMES]
    # The first part said to last 5 frames longer than it does: the second starts 0.2 s late.
    gapped = tmp_path / "gapped.mp4"
    concat(paths, [exact[0] + 0.2, *exact[1:]], tmp_path / "gapped.ffconcat", gapped)
    # Exact joins with the audio as long as the video, and with an audio track 0.2 s short.
    joined: dict[float, Path] = {}
    for seconds in (SECONDS, SECONDS - 0.2):
        joined[seconds] = tmp_path / f"audio-{seconds:g}.mp4"
        tone = f"sine=sample_rate=48000:duration={seconds:g}"
        concat(
            paths, exact, tmp_path / "exact.ffconcat", joined[seconds],
            "-f", "lavfi", "-i", tone, "-map", "0:v", "-map", "1:a", "-c:a", "aac",
        )  # fmt: skip
    short_audio = joined[SECONDS - 0.2]

    await verify_join(ffmpeg_binary(), joined[SECONDS], TOTAL, FPS, PART_FRAMES)
    with pytest.raises(RenderFailure) as gap:
        await verify_join(ffmpeg_binary(), gapped, TOTAL, FPS, PART_FRAMES)
    with pytest.raises(RenderFailure) as short:
        await verify_join(ffmpeg_binary(), short_audio, TOTAL, FPS, PART_FRAMES)
    assert gap.value.code == short.value.code == FailureCode.VERIFICATION_FAILED
    assert "timestamp gap of 200.0 ms at the join of parts 0 and 1 (frame 24)" in gap.value.message
    assert "the audio lasts 2.800 s and the video 3.000 s" in short.value.message


async def test_hevc_parts_of_a_source_without_audio_join_without_audio(service: Running) -> None:
    source = make_source(service.config.media_root / "silent.mp4", audio=False)
    base = transcode_spec("silent.mp4", crf=0)
    base.output.video_codec = "hevc"
    paths = await render_parts(service, base, "hevc")
    joined = await render(service, "hevc-join", join_spec(base, paths, TOTAL))

    assert_join_events(joined)
    output = Path(joined[-1].completed.output_path)
    streams = stored_packets(output)
    assert set(streams) == {"video"}
    time_base, pts, codec = streams["video"]
    assert codec == "hevc" and len(pts) == TOTAL
    ordered = sorted(pts)
    step = Fraction(1) / Fraction(FPS) / time_base
    assert [p - ordered[0] for p in ordered] == [int(step) * i for i in range(TOTAL)]
    # x265 at crf 0 is not lossless: each frame is compared with the source's by PSNR.
    aligned = psnr_per_frame(output, source)
    assert len(aligned) == TOTAL and min(aligned) > 35, min(aligned)


async def test_parts_of_a_30_fps_source_on_a_25_fps_output_are_the_whole_renders_frames(
    service: Running,
) -> None:
    run_ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=30:duration={SECONDS:g}",
        "-c:v", "libx264", "-preset", "fast", "-bf", "3", "-g", "11", "-pix_fmt", "yuv420p",
        str(service.config.media_root / "thirty.mp4"),
    )  # fmt: skip
    base = transcode_spec("thirty.mp4")
    base.output.fps = FPS
    paths = await render_parts(service, base, "thirty")
    joined = await render(service, "thirty-join", join_spec(base, paths, TOTAL))
    whole = await render(service, "thirty-whole", base)

    assert_join_events(joined)
    reference = decoded_frames(Path(whole[-1].completed.output_path))
    assert len(reference) == TOTAL
    assert decoded_frames(Path(joined[-1].completed.output_path)) == reference


async def test_a_restarted_service_removes_what_joins_left_in_its_scratch_directory(
    start: StartServer, config: RenderConfig, tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    left = scratch / "joins" / "crashed-join"
    left.mkdir(parents=True)
    (left / "parts.ffconcat").write_text("ffconcat version 1.0\n")

    await start(config, scratch_dir=scratch)

    assert not (scratch / "joins").exists()


async def test_a_part_that_does_not_decode_cleanly_fails_its_check(
    service: Running, tmp_path: Path
) -> None:
    base = whole_spec("mp4", "h264", "aac", crf=30)
    paths = await render_parts(service, base, "damaged")
    damaged = tmp_path / "damaged.mp4"
    data = bytearray(await asyncio.to_thread(Path(paths[1]).read_bytes))
    middle = len(data) // 2
    data[middle : middle + 256] = bytes(256)  # zeros inside the coded frames
    await asyncio.to_thread(damaged.write_bytes, bytes(data))

    await verify_part(ffmpeg_binary(), Path(paths[1]), PART_FRAMES[1], PART_FRAMES[0])
    with pytest.raises(RenderFailure) as failed:
        await verify_part(ffmpeg_binary(), damaged, PART_FRAMES[1], PART_FRAMES[0])
    assert failed.value.code == FailureCode.VERIFICATION_FAILED
    assert "does not read cleanly" in failed.value.message


async def test_slideshow_parts_with_a_soundtrack_join_into_the_whole_renders_frames(
    service: Running,
) -> None:
    media = service.config.media_root
    for name, color in (("one.png", "red"), ("two.png", "blue")):
        run_ffmpeg(
            "-f", "lavfi", "-i", f"color=c={color}:s=160x120", "-frames:v", "1", str(media / name)
        )
    run_ffmpeg("-f", "lavfi", "-i", "sine=duration=1", str(media / "tone.wav"))
    base = spec_pb2.RenderSpec()
    base.source.slideshow.slides.add(image_path="one.png", duration_seconds=1.3)
    base.source.slideshow.slides.add(image_path="two.png", duration_seconds=SECONDS - 1.3)
    # Shorter than the slides: padded with silence to the video's length.
    base.source.slideshow.audio_path = "tone.wav"
    base.output.fps = FPS
    base.output.preset = "ultrafast"
    base.output.crf = 0
    paths = await render_parts(service, base, "slides")
    joined = await render(service, "slides-join", join_spec(base, paths, TOTAL))
    whole = await render(service, "slides-whole", base)

    assert_join_events(joined)
    output = Path(joined[-1].completed.output_path)
    assert_evenly_timed(output, "h264", "aac")
    assert decoded_frames(output) == decoded_frames(Path(whole[-1].completed.output_path))
