"""What a split's planner needs to know of a source (CheckInputs' answer): its duration, frame
rate, whether its frames are evenly spaced, whether it has audio, when its video ends. A test
pattern or slideshow is as its spec makes it; a transcode's input is read: its header, the
timestamps of its first video packets as stored, and those of its last (stream-copy scans,
quick whatever the codec; only ``ffmpeg``, which every build has, not ffprobe)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import statistics
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from render_service.failures import RenderFailure
from render_service.ffmpeg_command import DEFAULT_SLIDESHOW_FPS
from render_service.ffmpeg_process import run_ffmpeg_captured
from render_service.frame_scan import of_type, parse_framecrc
from videojob.render.v1 import render_pb2, spec_pb2

logger = logging.getLogger(__name__)

# Seconds of the source's video whose timestamps are read.
SCANNED_SECONDS = 60
SCAN_TIMEOUT_SECONDS = 20.0
# A frame's spacing further than this share of the usual one from it: not a constant rate.
SPACING_TOLERANCE = 0.1
# Seconds before the container's end from which the video's last packets are read: a demuxer
# that seeks by the video's keyframes (MP4, Matroska, WebM) lands on the video's last keyframe
# before that point even when the video ends earlier; one that finds no video packet there
# (MPEG-TS seeks by bytes) gets the whole video stream read instead.
TAIL_SECONDS = 10
_START = re.compile(r"Duration: .*?, start: (?P<start>-?\d+(?:\.\d+)?)")
_TBR = re.compile(r"Stream #0:\d+\S*: Video: .*?(?P<rate>\d+(?:\.\d+)?)(?P<k>k?) tbr")


@dataclass(frozen=True)
class SourceFacts:
    duration_seconds: float = 0.0
    fps: float = 0.0
    variable_frame_rate: bool = False
    has_audio: bool = False
    video_duration_seconds: float = 0.0

    def message(self) -> render_pb2.CheckInputsResponse:
        return render_pb2.CheckInputsResponse(
            duration_seconds=self.duration_seconds,
            fps=self.fps,
            variable_frame_rate=self.variable_frame_rate,
            has_audio=self.has_audio,
            video_duration_seconds=self.video_duration_seconds,
        )


def spec_facts(spec: spec_pb2.RenderSpec, duration_seconds: float) -> SourceFacts:
    """A test pattern's or slideshow's facts (``spec`` normalized): made at a constant rate,
    with audio (the tone, the soundtrack or silence)."""
    if spec.source.WhichOneof("kind") == "test_pattern":
        fps = spec.source.test_pattern.fps
    else:
        fps = DEFAULT_SLIDESHOW_FPS
    return SourceFacts(
        duration_seconds=duration_seconds,
        fps=fps,
        has_audio=True,
        video_duration_seconds=duration_seconds,
    )


def _snapped(rate: float) -> float:
    """``rate`` as the nearest simple fraction (30000/1001) when it is that close to one."""
    simple = Fraction(rate).limit_denominator(1001)
    return float(simple) if abs(float(simple) - rate) <= rate * 1e-4 else rate


def _header_rate(header: str) -> float:
    match = _TBR.search(header)
    if match is None:
        return 0.0
    return float(match["rate"]) * (1000 if match["k"] else 1)


def rate_of(pts: list[int], time_base: Fraction) -> tuple[float, bool]:
    """The frame rate of frames at ``pts`` (in ``time_base`` units) and whether it varies;
    (0, False) for fewer than 3 frames."""
    times = sorted(pts)
    if len(times) < 3 or times[-1] == times[0]:
        return 0.0, False
    spacings = [later - earlier for earlier, later in itertools.pairwise(times)]
    usual = statistics.median(spacings)
    allowed = max(SPACING_TOLERANCE * usual, 1.5)
    variable = any(abs(spacing - usual) > allowed for spacing in spacings)
    seconds = float((times[-1] - times[0]) * time_base)
    return _snapped((len(times) - 1) / seconds), variable


def _packet_rate(framecrc: str) -> tuple[float, bool]:
    video = of_type(parse_framecrc(framecrc), "video")
    if video is None or not video.packets:
        return 0.0, False
    # The scan stops in decoding order: a frame shown before the last packet read but decoded
    # after it (B-frames) is missing at the end, which is no gap in the source.
    last_read = max(packet.dts for packet in video.packets)
    return rate_of([p.pts for p in video.packets if p.pts <= last_read], video.time_base)


def video_end_seconds(framecrc: str, stderr: str, fps: float) -> float:
    """When the video of a ``-copyts`` stream-copy scan ends, on the timeline a render gives
    the source (from the container's start, which the scan's header states): the end of its
    last-shown packet (a packet stored without a duration lasts a frame at ``fps``). 0: no
    video packet was read."""
    video = of_type(parse_framecrc(framecrc), "video")
    if video is None or not video.packets:
        return 0.0
    frame_ticks = int(1 / (fps * video.time_base)) if fps > 0 else 0
    last = max(video.packets, key=lambda packet: packet.pts)
    end = video.seconds(last.pts + (last.duration or frame_ticks))
    match = _START.search(stderr)
    start = float(match["start"]) if match is not None else 0.0
    return max(0.0, end - start)


def _video_packets_argv(binary: str, path: Path, *input_options: str) -> list[str]:
    """FFmpeg listing the first video stream's packets as stored (``framecrc``, no decoding),
    ``input_options`` applying to the input."""
    return [
        binary,
        *("-hide_banner", "-nostdin", "-protocol_whitelist", "file"),
        *input_options,
        *("-i", f"file:{path}", "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"),
    ]


async def video_duration(binary: str, path: Path, fps: float) -> float:
    """When ``path``'s first video stream ends (0: unknown): its last packets read from
    ``TAIL_SECONDS`` before the container's end, or, when none is found there, the whole
    stream read."""
    for seek in (("-sseof", f"-{TAIL_SECONDS}"), ()):
        argv = _video_packets_argv(binary, path, *seek, "-copyts")
        try:
            run = await run_ffmpeg_captured(argv, SCAN_TIMEOUT_SECONDS)
        except RenderFailure as failure:
            logger.warning("the video's end of %s is unknown: %s", path.name, failure)
            return 0.0
        if run.returncode != 0:
            return 0.0
        seconds = await asyncio.to_thread(video_end_seconds, run.stdout, run.stderr, fps)
        if seconds > 0:
            return seconds
    return 0.0


async def transcode_facts(
    binary: str, path: Path, duration_seconds: float, has_audio: bool
) -> SourceFacts:
    argv = _video_packets_argv(binary, path, "-t", str(SCANNED_SECONDS))
    run = await run_ffmpeg_captured(argv, SCAN_TIMEOUT_SECONDS)
    fps, variable = 0.0, False
    if run.returncode == 0:
        fps, variable = await asyncio.to_thread(_packet_rate, run.stdout)
    if not fps:
        fps = _header_rate(run.stderr)
    video_seconds = await video_duration(binary, path, fps)
    return SourceFacts(duration_seconds, fps, variable, has_audio, video_seconds)
