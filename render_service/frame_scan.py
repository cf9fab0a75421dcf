"""What a media file's streams hold packet by packet, read with FFmpeg's ``framecrc`` muxer (the
imageio-ffmpeg wheel ships no ffprobe): ``-c copy`` lists the packets as stored (timestamps,
durations, flags); with a stream decoded, its frames as the decoder gives them. The lines look
alike in FFmpeg 5.1 and 9.0 (9.0 adds side data after the flags)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from render_service.failures import FailureCode, RenderFailure, ffmpeg_reason
from render_service.ffmpeg_process import run_ffmpeg_captured
from videojob.limits import bounded_log_tail

SCAN_TIMEOUT_SECONDS = 600.0
# AV_PKT_FLAG_DISCARD: a packet the decoder drops (an encoder's priming samples).
DISCARD_FLAG = 0x4

_HEADER = re.compile(r"^#(?P<key>[a-z_]+) (?P<index>\d+): (?P<value>.*)$")
_FLAGS = re.compile(r"F=0x(?P<flags>[0-9a-fA-F]+)")


@dataclass(frozen=True)
class Packet:
    dts: int
    pts: int
    duration: int
    flags: int


@dataclass
class StreamScan:
    index: int
    media_type: str = ""
    codec: str = ""
    time_base: Fraction = Fraction(1)
    dimensions: str = ""
    extradata: str = ""
    packets: list[Packet] = field(default_factory=list)

    def seconds(self, ticks: int) -> float:
        return float(ticks * self.time_base)

    @property
    def kept(self) -> list[Packet]:
        """The packets a decoder does not drop."""
        return [packet for packet in self.packets if not packet.flags & DISCARD_FLAG]

    def described(self) -> str:
        """The stream's form as the join needs it alike in every part."""
        return f"{self.codec} {self.dimensions} time base {self.time_base} headers {self.extradata}"


def parse_framecrc(text: str) -> dict[int, StreamScan]:
    streams: dict[int, StreamScan] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            header = _HEADER.match(line)
            if header is None:
                continue
            stream = streams.setdefault(int(header["index"]), StreamScan(int(header["index"])))
            key, value = header["key"], header["value"].strip()
            if key == "tb":
                stream.time_base = Fraction(value)
            elif key == "media_type":
                stream.media_type = value
            elif key == "codec_id":
                stream.codec = value
            elif key == "dimensions":
                stream.dimensions = value
            elif key == "extradata":
                stream.extradata = value.replace(" ", "")
            continue
        fields = line.split(",")
        if len(fields) < 6 or not fields[0].strip().isdigit():
            continue
        stream = streams.setdefault(int(fields[0]), StreamScan(int(fields[0])))
        flags = _FLAGS.search(line)
        stream.packets.append(
            Packet(
                dts=int(fields[1]),
                pts=int(fields[2]),
                duration=int(fields[3]),
                # No F= field: the default flags, a key packet.
                flags=int(flags["flags"], 16) if flags else 0x1,
            )
        )
    return streams


async def scan(binary: str, path: Path, *selection: str) -> dict[int, StreamScan]:
    """``selection``: the stream maps and codec options (``-map 0:v:0 -c:v copy``...). Any error
    FFmpeg reports (``-xerror``) fails the scan: VERIFICATION_FAILED with FFmpeg's reason."""
    argv = [
        binary,
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-xerror",
        "-protocol_whitelist",
        "file",
        "-i",
        f"file:{path}",
        *selection,
        "-f",
        "framecrc",
        "-",
    ]
    run = await run_ffmpeg_captured(argv, SCAN_TIMEOUT_SECONDS)
    if run.returncode != 0 or run.stderr.strip():
        reason = ffmpeg_reason(run.stderr) or f"ffmpeg exited with code {run.returncode}"
        raise RenderFailure(
            FailureCode.VERIFICATION_FAILED,
            f"{path.name} does not read cleanly: {reason}",
            bounded_log_tail(run.stderr),
        )
    # A long file lists hundreds of thousands of packets: parsed off the event loop.
    return await asyncio.to_thread(parse_framecrc, run.stdout)


def of_type(streams: dict[int, StreamScan], media_type: str) -> StreamScan | None:
    return next((s for s in streams.values() if s.media_type == media_type), None)


@dataclass(frozen=True)
class TimelineFault:
    frame: int
    offset_seconds: float

    def describe(self, boundaries: dict[int, int]) -> str:
        """``boundaries``: the first frame of each part but the first, to its part index."""
        kind = "gap" if self.offset_seconds > 0 else "overlap"
        where = f"at frame {self.frame}"
        if self.frame in boundaries:
            part = boundaries[self.frame]
            where = f"at the join of parts {part - 1} and {part} (frame {self.frame})"
        return f"a timestamp {kind} of {abs(self.offset_seconds) * 1000:.1f} ms {where}"


def timeline_fault(video: StreamScan, fps: float) -> TimelineFault | None:
    """The first frame (in presentation order) that is not where a constant frame rate puts it,
    counted from the first frame: later by more than a quarter of a frame (a gap before it) or
    earlier (an overlap). A container's rounding (WebM's milliseconds) stays within that."""
    times = sorted(video.seconds(packet.pts) for packet in video.packets)
    if not times:
        return None
    tolerance = max(0.25 / fps, 1.5 * float(video.time_base))
    for index, seconds in enumerate(times):
        offset = seconds - (times[0] + index / fps)
        if abs(offset) > tolerance:
            return TimelineFault(index, offset)
    return None
