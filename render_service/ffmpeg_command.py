"""Building FFmpeg's argv for a render with ffmpeg-python.

File inputs get ``-protocol_whitelist file`` and a ``file:`` prefix; lavfi appears only in graphs
built here. The subtitles path goes through the filter graph, so it is escaped for both levels of
filter-graph parsing (see ``escape_filter_value``)."""

from __future__ import annotations

import collections
import functools
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from videojob import limits
from videojob.render.v1 import spec_pb2

PROGRESS_ARGS = ("-progress", "pipe:1", "-nostats", "-stats_period", "0.5")
GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-y", "-loglevel", "warning", *PROGRESS_ARGS)
DEFAULT_SLIDESHOW_FPS = limits.DEFAULT_SLIDESHOW_FPS
DEFAULT_SLIDESHOW_SIZE = (1280, 720)
AUDIO_SAMPLE_RATE = 48000

# ffmpeg-python escapes filter arguments, but not whitespace, which FFmpeg strips from the ends of
# an unescaped value; the subtitles path is therefore substituted after compiling.
_SUBTITLES_PLACEHOLDER = "VIDEOJOBSUBTITLESPATH"
_OPTION_VALUE_SPECIALS = "\\':="
_FILTERGRAPH_SPECIALS = "\\'[],;"

_VP9_SPEED = {
    "ultrafast": ("realtime", 8),
    "superfast": ("realtime", 8),
    "veryfast": ("realtime", 7),
    "faster": ("good", 5),
    "fast": ("good", 4),
    "medium": ("good", 2),
    "slow": ("good", 1),
    "slower": ("good", 0),
    "veryslow": ("best", 0),
}
_SVTAV1_PRESET = {
    "ultrafast": 12,
    "superfast": 11,
    "veryfast": 10,
    "faster": 9,
    "fast": 8,
    "medium": 6,
    "slow": 4,
    "slower": 2,
    "veryslow": 1,
}
_AOM_CPU_USED = {
    "ultrafast": 8,
    "superfast": 8,
    "veryfast": 7,
    "faster": 6,
    "fast": 5,
    "medium": 4,
    "slow": 2,
    "slower": 1,
    "veryslow": 0,
}


def _escape(text: str, specials: str) -> str:
    return "".join("\\" + ch if ch in specials or ch.isspace() else ch for ch in text)


def escape_option_value(value: str) -> str:
    """Escapes ``value`` for a filter's option parser alone (``\\ ' : =`` and whitespace): how
    FFmpeg shows an option value once the graph parser has read the description."""
    return _escape(value, _OPTION_VALUE_SPECIALS)


def escape_filter_value(value: str) -> str:
    """Escapes ``value`` as a filter option value inside a filter-graph description: first for
    the option parser (``\\ ' : =``), then for the graph parser (``\\ ' [ ] , ;``); whitespace at
    both levels. No character of ``value`` can then end the option or the filter."""
    return _escape(escape_option_value(value), _FILTERGRAPH_SPECIALS)


@functools.cache
def available_encoders(binary: str) -> frozenset[str]:
    listing = subprocess.run(
        [binary, "-hide_banner", "-nostdin", "-encoders"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    ).stdout
    names = set()
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    return frozenset(names)


def av1_encoder(binary: str) -> str:
    return "libsvtav1" if "libsvtav1" in available_encoders(binary) else "libaom-av1"


@dataclass(frozen=True)
class RenderInputs:
    """Everything the command needs besides the spec: resolved paths and probed facts."""

    transcode_path: Path | None = None
    transcode_has_audio: bool = False
    slide_paths: Sequence[Path] = ()
    slide_size: tuple[int, int] | None = None
    audio_path: Path | None = None
    subtitles_path: Path | None = None


def fmt(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def file_input(path: Path, **options: Any) -> Any:
    return ffmpeg.input(f"file:{path}", protocol_whitelist="file", **options)


def video_codec_args(output: spec_pb2.OutputSpec, binary: str) -> dict[str, Any]:
    codec = output.video_codec
    preset = output.preset
    args: dict[str, Any] = {}
    if codec in ("h264", "hevc"):
        args["vcodec"] = "libx264" if codec == "h264" else "libx265"
        if preset:
            args["preset"] = preset
        if output.HasField("crf"):  # within the codec's range (videojob.spec_validation)
            args["crf"] = output.crf
        if codec == "hevc":
            args["x265-params"] = "log-level=error"
            if output.container == "mp4":
                args["tag:v"] = "hvc1"
    elif codec == "vp9":
        deadline, cpu_used = _VP9_SPEED[preset or "medium"]
        args.update(vcodec="libvpx-vp9", deadline=deadline, **{"cpu-used": cpu_used, "row-mt": 1})
        args["crf"] = output.crf if output.HasField("crf") else 32
        args["b:v"] = 0
    else:
        encoder = av1_encoder(binary)
        args["vcodec"] = encoder
        if encoder == "libsvtav1":
            args["preset"] = _SVTAV1_PRESET[preset or "medium"]
        else:
            args["cpu-used"] = _AOM_CPU_USED[preset or "medium"]
            args["b:v"] = 0
            args["crf"] = 32
        if output.HasField("crf"):
            args["crf"] = output.crf
    return args


def audio_codec_args(output: spec_pb2.OutputSpec) -> dict[str, Any]:
    if output.audio_codec == "opus":
        return {"acodec": "libopus", "b:a": "96k", "ar": AUDIO_SAMPLE_RATE}
    return {"acodec": "aac", "b:a": "128k", "ar": AUDIO_SAMPLE_RATE}


def _fit(stream: Any, width: int, height: int) -> Any:
    return (
        stream.filter("scale", width, height, force_original_aspect_ratio="decrease")
        .filter("pad", width, height, "(ow-iw)/2", "(oh-ih)/2")
        .filter("setsar", 1)
    )


def _scale(stream: Any, width: int, height: int) -> Any:
    """Both set: fitted into the box (letterboxed); one set: scaled to it, the other
    following the aspect ratio (rounded to an even number: ffmpeg's -2)."""
    if width and height:
        return _fit(stream, width, height)
    return stream.filter("scale", width or -2, height or -2).filter("setsar", 1)


def _slide_box(slide_size: tuple[int, int] | None, width: int, height: int) -> tuple[int, int]:
    """The slideshow's frame: the output size, the first slide's size or the default; one
    dimension given alone keeps the first slide's aspect ratio."""
    base_width, base_height = slide_size or DEFAULT_SLIDESHOW_SIZE
    if width and height:
        return width, height
    if width:
        return width, max(2, round(width * base_height / base_width / 2) * 2)
    if height:
        return max(2, round(height * base_width / base_height / 2) * 2), height
    return base_width, base_height


def output_frame_rate(spec: spec_pb2.RenderSpec) -> float | None:
    """The constant frame rate the command gives the output (``spec`` normalized), or None where
    the output keeps the source's timing: a transcode without ``output.fps``."""
    kind = spec.source.WhichOneof("kind")
    if kind == "slideshow":
        return spec.output.fps or DEFAULT_SLIDESHOW_FPS
    if spec.output.fps:
        return spec.output.fps
    if kind == "test_pattern":
        return spec.source.test_pattern.fps
    return None


@dataclass(frozen=True)
class SourceStreams:
    """The source's streams as the output takes them, before the output's own shaping."""

    video: Any
    audio: Any | None
    output_options: dict[str, Any]


def source_streams(
    spec: spec_pb2.RenderSpec,
    inputs: RenderInputs,
    duration_seconds: float,
    transcode_seek: float | None = None,
) -> SourceStreams:
    """The video and audio streams of ``spec``'s source (``spec`` normalized); a transcode's
    input is read from ``transcode_seek`` seconds when given."""
    output = spec.output
    source = spec.source
    kind = source.WhichOneof("kind")
    video: Any
    audio: Any | None
    output_options: dict[str, Any] = {}
    if kind == "test_pattern":
        pattern = source.test_pattern
        duration = fmt(pattern.duration_seconds)
        video = ffmpeg.input(
            f"testsrc2=size={pattern.width}x{pattern.height}:rate={fmt(pattern.fps)}"
            f":duration={duration}",
            f="lavfi",
        ).video
        audio = ffmpeg.input(
            f"sine=frequency=440:sample_rate={AUDIO_SAMPLE_RATE}:duration={duration}", f="lavfi"
        ).audio
    elif kind == "transcode":
        assert inputs.transcode_path is not None
        seek = {} if transcode_seek is None else {"ss": fmt(transcode_seek)}
        media = file_input(inputs.transcode_path, **seek)
        video = media["v:0"]
        audio = media["a:0"] if inputs.transcode_has_audio else None
    else:
        show = source.slideshow
        fps = output.fps or DEFAULT_SLIDESHOW_FPS
        width, height = _slide_box(inputs.slide_size, output.width, output.height)
        # Slides that show the same image for the same time are one input (ffmpeg-python
        # merges identical inputs), split into as many streams as there are such slides.
        slides = [
            (path, slide.duration_seconds)
            for slide, path in zip(show.slides, inputs.slide_paths, strict=True)
        ]
        slide_streams: dict[tuple[Path, float], list[Any]] = {}
        for (path, seconds), count in collections.Counter(slides).items():
            image = file_input(
                path,
                f="image2",
                pattern_type="none",
                loop=1,
                framerate=fmt(fps),
                t=fmt(seconds),
            )
            clip = _fit(image.video, width, height).filter("fps", fmt(fps))
            if count == 1:
                slide_streams[(path, seconds)] = [clip]
            else:
                split = clip.filter_multi_output("split", count)
                slide_streams[(path, seconds)] = [split.stream(i) for i in range(count)]
        clips = [slide_streams[key].pop(0) for key in slides]
        video = ffmpeg.concat(*clips, n=len(clips), v=1, a=0)
        if inputs.subtitles_path is not None:
            video = video.filter("subtitles", filename=_SUBTITLES_PLACEHOLDER)
        if inputs.audio_path is not None:
            audio = file_input(inputs.audio_path).audio.filter("apad")
        else:
            audio = ffmpeg.input(
                f"anullsrc=channel_layout=stereo:sample_rate={AUDIO_SAMPLE_RATE}", f="lavfi"
            ).audio
        output_options["t"] = fmt(duration_seconds)
    if (output.width or output.height) and kind != "slideshow":
        video = _scale(video, output.width, output.height)
    if output.fps and kind != "slideshow":
        video = video.filter("fps", fmt(output.fps))
    return SourceStreams(video, audio, output_options)


def compile_argv(binary: str, node: Any, inputs: RenderInputs, *extra_global: str) -> list[str]:
    """The argv of an ffmpeg-python output ``node``, with the subtitles path put in place."""
    argv: list[str] = [binary, *GLOBAL_ARGS, *extra_global, *node.get_args()]
    if inputs.subtitles_path is not None:
        escaped = escape_filter_value(str(inputs.subtitles_path))
        argv = [arg.replace(_SUBTITLES_PLACEHOLDER, escaped) for arg in argv]
    return argv


def build_render_argv(
    binary: str,
    spec: spec_pb2.RenderSpec,
    inputs: RenderInputs,
    output_path: Path,
    duration_seconds: float,
) -> list[str]:
    """The full argv of the render (``spec`` already normalized)."""
    output = spec.output
    streams = source_streams(spec, inputs, duration_seconds)
    video = streams.video.filter("format", "yuv420p")
    output_options = dict(streams.output_options)
    output_options.update(video_codec_args(output, binary))
    if output.faststart:
        output_options["movflags"] = "+faststart"
    selected = [video]
    if streams.audio is not None:
        selected.append(streams.audio)
        output_options.update(audio_codec_args(output))
    node = ffmpeg.output(*selected, f"file:{output_path}", f=output.container, **output_options)
    return compile_argv(binary, node, inputs)
