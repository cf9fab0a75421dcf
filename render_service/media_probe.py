"""What an input file holds (videojob.media_header), read by FFmpeg under the render service's
own process handling."""

from __future__ import annotations

from pathlib import Path

from render_service.failures import ffmpeg_reason, invalid_input
from render_service.ffmpeg_process import run_ffmpeg_captured
from videojob.limits import bounded_log_tail
from videojob.media_header import (
    TEXT_SUBTITLE_CODECS,
    MediaHeader,
    header_command,
    parse_media_header,
    subtitle_codec,
)

PROBE_TIMEOUT_SECONDS = 30.0


async def probe_media(binary: str, path: Path, field: str) -> MediaHeader:
    """Reads ``path``'s header; a file that holds no media is an INVALID_INPUT failure naming
    ``field``."""
    run = await run_ffmpeg_captured(header_command(binary, path), PROBE_TIMEOUT_SECONDS)
    info = parse_media_header(run.stderr)
    if info is None:
        reason = ffmpeg_reason(run.stderr)
        # The whole path: the client is shown it relative to the media root (public_paths).
        problem = f"{str(path)!r} is not a readable media file"
        raise invalid_input(
            field, f"{problem}: {reason}" if reason else problem, bounded_log_tail(run.stderr)
        )
    return info


async def probe_subtitles(binary: str, path: Path, field: str) -> str:
    """The codec of ``path``'s subtitles; a file that holds no subtitles, or subtitles that are
    pictures (the subtitles filter draws text), is an INVALID_INPUT failure naming ``field``."""
    run = await run_ffmpeg_captured(header_command(binary, path), PROBE_TIMEOUT_SECONDS)
    codec = subtitle_codec(run.stderr)
    if codec is None:
        reason = ffmpeg_reason(run.stderr)
        problem = f"{str(path)!r} is not a subtitles file ffmpeg can read (srt, ass, vtt...)"
        raise invalid_input(
            field, f"{problem}: {reason}" if reason else problem, bounded_log_tail(run.stderr)
        )
    if codec not in TEXT_SUBTITLE_CODECS:
        raise invalid_input(
            field,
            f"{str(path)!r} holds {codec} subtitles, which are pictures: "
            "use text subtitles (srt, ass, vtt...)",
        )
    return codec
