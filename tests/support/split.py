"""A split job's render specs for tests (three uneven parts of a tiny output), what its files
hold, read with FFmpeg independently of the render service's own scan, and how the API shows a
placed part."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.render.v1 import spec_pb2

# The states the API shows a part in once its render is placed: waiting for a slot on its
# render service, or rendering.
PLACED = ("queued", "rendering")
FPS = 25.0
# Uneven on purpose: no boundary falls on a second, nor on the 7-frame keyframes of the source
# made below.
PART_FRAMES = [24, 26, 25]
TOTAL = sum(PART_FRAMES)
SECONDS = TOTAL / FPS


def part_spec(base: spec_pb2.RenderSpec, index: int, counts: list[int]) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.CopyFrom(base)
    spec.part.index = index
    spec.part.count = len(counts)
    spec.part.first_frame = sum(counts[:index])
    spec.part.frame_count = counts[index]
    spec.part.total_frames = sum(counts)
    spec.part.fps = FPS
    return spec


def join_spec(base: spec_pb2.RenderSpec, paths: list[str], total: int) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.CopyFrom(base)
    spec.join.part_paths.extend(paths)
    spec.join.total_frames = total
    spec.join.fps = FPS
    return spec


def ffmpeg_out(*args: str) -> str:
    return subprocess.run(
        [tool_ffmpeg(), "-hide_banner", "-nostdin", "-v", "error", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def decoded_frames(path: Path) -> list[str]:
    """The CRC of every decoded video frame, in order."""
    out = ffmpeg_out(
        "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "framecrc", "-"
    )
    return [line.split(",")[5].strip() for line in out.splitlines() if line.startswith("0,")]


def stored_packets(path: Path) -> dict[str, tuple[Fraction, list[int], str]]:
    """Per media type: the time base, every packet's pts and the codec, as stored."""
    out = ffmpeg_out("-i", str(path), "-map", "0", "-c", "copy", "-f", "framecrc", "-")
    streams: dict[int, dict[str, str]] = {}
    pts: dict[int, list[int]] = {}
    for line in out.splitlines():
        if line.startswith("#") and ":" in line:
            key, value = line[1:].split(":", 1)
            name, _, index = key.partition(" ")
            if index.isdigit():
                streams.setdefault(int(index), {})[name] = value.strip()
        elif line[:1].isdigit():
            fields = line.split(",")
            pts.setdefault(int(fields[0]), []).append(int(fields[2]))
    return {
        info["media_type"]: (Fraction(info["tb"]), pts.get(index, []), info["codec_id"])
        for index, info in streams.items()
    }


def audio_seconds(path: Path) -> float:
    out = ffmpeg_out("-i", str(path), "-map", "0:a:0", "-c:a", "pcm_s16le", "-f", "framecrc", "-")
    time_base = Fraction(1)
    ticks = 0
    for line in out.splitlines():
        if line.startswith("#tb 0:"):
            time_base = Fraction(line.split(":", 1)[1].strip())
        elif line.startswith("0,"):
            ticks += int(line.split(",")[3])
    return float(ticks * time_base)
