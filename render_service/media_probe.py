"""What an input file holds, read from the header `ffmpeg -i FILE` prints (no ffprobe needed)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from render_service.failures import ffmpeg_reason, invalid_input
from render_service.ffmpeg_process import run_ffmpeg_captured
from render_service.ffmpeg_progress import parse_header_duration
from videojob.limits import bounded_log_tail

PROBE_TIMEOUT_SECONDS = 30.0
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: .*?(?<![\dx])(\d{1,5})x(\d{1,5})(?!\d)")
_AUDIO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Audio: ")


@dataclass(frozen=True)
class MediaInfo:
    duration_seconds: float | None
    has_video: bool
    has_audio: bool
    width: int | None
    height: int | None


def parse_media_info(header: str) -> MediaInfo:
    video = _VIDEO_STREAM.search(header)
    return MediaInfo(
        duration_seconds=parse_header_duration(header),
        has_video=video is not None,
        has_audio=_AUDIO_STREAM.search(header) is not None,
        width=int(video.group(1)) if video else None,
        height=int(video.group(2)) if video else None,
    )


async def probe_media(binary: str, path: Path, field: str) -> MediaInfo:
    """Reads ``path``'s header; an unreadable file is an INVALID_INPUT failure naming ``field``."""
    run = await run_ffmpeg_captured(
        [binary, "-hide_banner", "-nostdin", "-protocol_whitelist", "file", "-i", f"file:{path}"],
        PROBE_TIMEOUT_SECONDS,
    )
    info = parse_media_info(run.stderr)
    if not info.has_video and not info.has_audio:
        reason = ffmpeg_reason(run.stderr)
        problem = f"{path.name!r} is not a readable media file"
        raise invalid_input(
            field, f"{problem}: {reason}" if reason else problem, bounded_log_tail(run.stderr)
        )
    return info
