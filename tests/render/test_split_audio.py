"""A split job's audio rendered beside its parts (``RenderSpec.audio``) and muxed as it is by the
join (``SplitJoin.audio_path``): the joined file's audio packets are the audio render's, and the
join still passes its check (every frame in place, the audio within one frame of the video)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
import pytest

from tests.render.conftest import Running, kind
from tests.render.test_split_render import (
    assert_evenly_timed,
    assert_join_events,
    make_source,
    render,
    render_parts,
    transcode_spec,
    whole_spec,
)
from tests.support.split import FPS, SECONDS, TOTAL, audio_seconds, ffmpeg_out, join_spec
from videojob.render.v1 import spec_pb2


def audio_spec(base: spec_pb2.RenderSpec) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.CopyFrom(base)
    spec.audio.total_frames = TOTAL
    spec.audio.fps = FPS
    return spec


def audio_packets(path: Path) -> list[str]:
    """Every stored audio packet's timestamps, size and CRC, in order."""
    out = ffmpeg_out("-i", str(path), "-map", "0:a:0", "-c", "copy", "-f", "framecrc", "-")
    return [line.split(",", 1)[1] for line in out.splitlines() if line.startswith("0,")]


def stream_types(path: Path) -> set[str]:
    out = ffmpeg_out("-i", str(path), "-map", "0", "-c", "copy", "-f", "framecrc", "-")
    return {
        line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("#media_type")
    }


@pytest.mark.parametrize(
    ("container", "video_codec", "audio_codec"),
    [("mp4", "h264", "aac"), ("webm", "vp9", "opus")],
)
async def test_the_audio_rendered_beside_the_parts_is_muxed_as_it_is(
    service: Running, container: str, video_codec: str, audio_codec: str
) -> None:
    base = whole_spec(container, video_codec, audio_codec, crf=30)
    base.output.preset = "ultrafast"
    paths, audio = await asyncio.gather(
        render_parts(service, base, f"{video_codec}-beside"),
        render(service, f"{video_codec}-audio", audio_spec(base)),
    )
    assert kind(audio[-1]) == "completed", audio[-1]
    assert "Verifying" in {event.progress.stage for event in audio[:-1]}
    audio_path = Path(audio[-1].completed.output_path)
    assert audio_path == (service.config.output_dir / f"{video_codec}-audio.{container}").resolve()
    assert stream_types(audio_path) == {"audio"}
    assert abs(audio_seconds(audio_path) - SECONDS) <= 1 / FPS

    join = join_spec(base, paths, TOTAL)
    join.join.audio_path = str(audio_path)
    joined = await render(service, f"{video_codec}-muxed", join)

    assert_join_events(joined)
    output = Path(joined[-1].completed.output_path)
    assert_evenly_timed(output, video_codec, audio_codec)
    # Copied, not encoded again: the same packets.
    assert audio_packets(output) == audio_packets(audio_path)


async def test_the_audio_of_a_source_without_audio_is_refused(service: Running) -> None:
    make_source(service.config.media_root / "silent.mp4", audio=False)
    events = await render(service, "silent-audio", audio_spec(transcode_spec("silent.mp4")))

    assert kind(events[-1]) == "failed"
    assert events[-1].failed.code == "INVALID_INPUT"
    assert "spec.audio" in events[-1].failed.message
    assert not (service.config.output_dir / "silent-audio.mp4").exists()


async def test_a_join_whose_audio_is_outside_the_output_directory_is_refused(
    service: Running, tmp_path: Path
) -> None:
    base = whole_spec("mp4", "h264", "aac", crf=30)
    paths, audio = await asyncio.gather(
        render_parts(service, base, "away"), render(service, "away-audio", audio_spec(base))
    )
    elsewhere = tmp_path / "elsewhere.mp4"
    await asyncio.to_thread(shutil.copyfile, audio[-1].completed.output_path, elsewhere)
    join = join_spec(base, paths, TOTAL)
    join.join.audio_path = str(elsewhere)
    events = await render(service, "away-join", join)

    assert kind(events[-1]) == "failed"
    assert events[-1].failed.code == "INVALID_INPUT"
    assert "spec.join.audio_path" in events[-1].failed.message


@pytest.mark.parametrize(
    ("total_frames", "fps", "field"),
    [(0, FPS, "spec.audio.total_frames"), (TOTAL, 0.0, "spec.audio.fps")],
)
async def test_an_audio_render_that_cannot_be_rendered_is_refused_naming_the_field(
    service: Running, total_frames: int, fps: float, field: str
) -> None:
    spec = audio_spec(whole_spec("mp4", "h264", "aac", crf=30))
    spec.audio.total_frames = total_frames
    spec.audio.fps = fps
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await render(service, "refused-audio", spec)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")
