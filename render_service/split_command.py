"""FFmpeg's argv for the render kinds of a split job.

A part is the output's video frames [first_frame, first_frame + frame_count) on the output's
frame timeline: the source goes through the same graph as a whole render, then an ``fps``
filter numbers every frame slot of the output from its start (its pts is the slot's index) and
``trim`` keeps the part's slots by pts, so the cut is exact whatever the source's keyframes.
A transcode is read from a little before the part (input ``-ss``; ``-copyts -start_at_zero``
keep the source's own timeline, so the slots are the whole render's); the seek only saves
decoding. Every part is encoded with the same settings: closed GOPs, a keyframe on its first
frame, a fixed keyframe interval, no audio.

A part is stored in the output's own container: MP4 gives each frame an exact timestamp (its
time scale is a multiple of the frame rate) and an exact duration, WebM is what VP9/AV1 in WebM
is joined into; both hold a closed-GOP stream that starts on a keyframe, which the concat
demuxer joins without re-encoding.

The join reads the parts with the concat demuxer, each given its exact duration (its frames over
the frame rate, so no gap or overlap comes from a container's rounded duration), copies the
video and muxes the audio, encoded once from the source for the whole output (padded with
silence or cut to the video's length), so no audio frame is cut at a join (AAC priming, Opus
pre-skip). That encode is either the join's own, after the parts, or an audio render's made
beside the parts (``RenderSpec.audio``: the output's container holding only that audio), whose
file the join copies as it is."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ffmpeg

from render_service.ffmpeg_command import (
    AUDIO_SAMPLE_RATE,
    RenderInputs,
    audio_codec_args,
    compile_argv,
    file_input,
    fmt,
    source_streams,
    video_codec_args,
)
from render_service.split_spec import part_is_last
from videojob.render.v1 import spec_pb2

# Frames of the output read before a transcode's part: the fps filter may fill a slot with a
# source frame up to half a slot earlier, which must not have been cut by the seek.
SEEK_MARGIN_FRAMES = 4
# Seconds between forced keyframes within a part (the same for every part).
KEYFRAME_INTERVAL_SECONDS = 10
# What the last part may pad by repeating the source's last frame beyond its planned
# ``pad_frames`` (the frames past the video's end when the audio outlasts it), when the
# source's video ends a little before the plan has it (a rounded duration, the frame-rate
# filter filling one slot less): the tolerance of the duration check. ``trim`` cuts the part at
# its planned frames whatever the padding.
END_PAD_SECONDS = 0.5


def _part_codec_args(output: spec_pb2.OutputSpec, binary: str, fps: float) -> dict[str, Any]:
    args = video_codec_args(output, binary)
    interval = max(1, round(fps * KEYFRAME_INTERVAL_SECONDS))
    args["force_key_frames"] = "expr:eq(n,0)"
    if output.video_codec == "h264":
        args["flags"] = "+cgop"
        args["g"] = interval
    elif output.video_codec == "hevc":
        args["x265-params"] = f"{args['x265-params']}:open-gop=0:keyint={interval}"
    elif output.video_codec == "vp9":
        args["g"] = interval
    return args


def part_seek_seconds(part: spec_pb2.SplitPart) -> float:
    return max(0, part.first_frame - SEEK_MARGIN_FRAMES) / part.fps


def build_part_argv(
    binary: str,
    spec: spec_pb2.RenderSpec,
    inputs: RenderInputs,
    output_path: Path,
    duration_seconds: float,
) -> list[str]:
    """The argv of a part render (``spec`` normalized, with ``part`` set)."""
    part = spec.part
    transcode = spec.source.WhichOneof("kind") == "transcode"
    seek = part_seek_seconds(part) if transcode and part.first_frame else None
    streams = source_streams(spec, inputs, duration_seconds, transcode_seek=seek)
    # Numbered from the output's start; a seeking part's first frame is already on that
    # timeline (-copyts), and anchoring it at 0 would clone it into every slot before it.
    anchor = {} if seek is not None else {"start_time": 0}
    video = streams.video.filter("fps", fps=fmt(part.fps), **anchor)
    if part_is_last(part):
        stop = part.pad_frames + math.ceil(part.fps * END_PAD_SECONDS)
        video = video.filter("tpad", stop_mode="clone", stop=stop)
    end = part.first_frame + part.frame_count
    video = (
        video.filter("trim", start_pts=part.first_frame, end_pts=end)
        .filter("setpts", "PTS-STARTPTS")
        .filter("format", "yuv420p")
    )
    options = _part_codec_args(spec.output, binary, part.fps)
    node = ffmpeg.output(video, f"file:{output_path}", f=spec.output.container, **options)
    extra = ("-copyts", "-start_at_zero") if seek is not None else ()
    return compile_argv(binary, node, inputs, *extra)


def concat_list(parts: Sequence[tuple[Path, int]], fps: float) -> str:
    """An ffconcat list of ``parts`` (path, frames), each lasting exactly its frames."""
    lines = ["ffconcat version 1.0"]
    for path, frames in parts:
        quoted = str(path).replace("'", "'\\''")
        lines.append(f"file 'file:{quoted}'")
        lines.append(f"duration {frames / fps:.9f}")
    return "\n".join(lines) + "\n"


def whole_audio(spec: spec_pb2.RenderSpec, inputs: RenderInputs, seconds: float) -> Any | None:
    """The whole output's audio stream from the source, lasting exactly ``seconds`` (None: a
    transcode without audio)."""
    source = spec.source
    kind = source.WhichOneof("kind")
    audio: Any
    if kind == "test_pattern":
        duration = fmt(source.test_pattern.duration_seconds)
        audio = ffmpeg.input(
            f"sine=frequency=440:sample_rate={AUDIO_SAMPLE_RATE}:duration={duration}", f="lavfi"
        ).audio
    elif kind == "transcode":
        if not inputs.transcode_has_audio:
            return None
        assert inputs.transcode_path is not None
        audio = file_input(inputs.transcode_path)["a:0"]
    elif inputs.audio_path is not None:
        audio = file_input(inputs.audio_path).audio
    else:
        audio = ffmpeg.input(
            f"anullsrc=channel_layout=stereo:sample_rate={AUDIO_SAMPLE_RATE}", f="lavfi"
        ).audio
    return audio.filter("apad").filter("atrim", duration=fmt(seconds))


def build_join_argv(
    binary: str,
    spec: spec_pb2.RenderSpec,
    inputs: RenderInputs,
    list_path: Path,
    output_path: Path,
    audio_file: Path | None = None,
) -> list[str]:
    """The argv of a join (``spec`` normalized, with ``join`` set): ``list_path`` is the
    parts' concat list; ``audio_file`` the audio render's file, muxed as it is (None: the
    audio is encoded here)."""
    join = spec.join
    output = spec.output
    seconds = join.total_frames / join.fps
    parts = ffmpeg.input(f"file:{list_path}", f="concat", safe=0, protocol_whitelist="file")
    streams = [parts["v:0"]]
    options: dict[str, Any] = {"c:v": "copy"}
    if output.video_codec == "hevc" and output.container == "mp4":
        options["tag:v"] = "hvc1"
    if audio_file is not None:
        streams.append(file_input(audio_file)["a:0"])
        options["c:a"] = "copy"
    else:
        audio = whole_audio(spec, inputs, seconds)
        if audio is not None:
            streams.append(audio)
            options.update(audio_codec_args(output))
    if output.faststart:
        options["movflags"] = "+faststart"
    node = ffmpeg.output(*streams, f"file:{output_path}", f=output.container, **options)
    return compile_argv(binary, node, RenderInputs())


def build_audio_argv(
    binary: str, spec: spec_pb2.RenderSpec, inputs: RenderInputs, output_path: Path
) -> list[str] | None:
    """The argv of a split job's audio render (``spec`` normalized, with ``audio`` set): the
    whole output's audio alone in the output's container. None: the source has no audio."""
    seconds = spec.audio.total_frames / spec.audio.fps
    audio = whole_audio(spec, inputs, seconds)
    if audio is None:
        return None
    options = audio_codec_args(spec.output)
    node = ffmpeg.output(audio, f"file:{output_path}", f=spec.output.container, **options)
    return compile_argv(binary, node, RenderInputs())
