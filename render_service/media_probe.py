"""What an input file holds (videojob.media_header), read by FFmpeg under the render service's
own process handling.

A header read is remembered for as long as the file stays the same file with the same content
(its device, inode, size, modification and change times): CheckInputs reads every input at
create and Render reads them again before starting, which then costs no FFmpeg run per input
(a slideshow's slides...). A file written, replaced or touched since is read again."""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from pathlib import Path
from typing import Final

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
REMEMBERED_HEADERS: Final = 256

_FileIdentity = tuple[str, str, int, int, int, int, int]
_headers: OrderedDict[_FileIdentity, str] = OrderedDict()


def _identity(binary: str, path: Path) -> _FileIdentity | None:
    try:
        facts = os.stat(path)
    except OSError:
        return None
    return (
        binary,
        str(path),
        facts.st_dev,
        facts.st_ino,
        facts.st_size,
        facts.st_mtime_ns,
        facts.st_ctime_ns,
    )


async def read_header(binary: str, path: Path) -> str:
    """What FFmpeg prints of ``path``'s header (its stderr), remembered while the file is
    unchanged (only a read that found media or subtitles is remembered)."""
    before = await asyncio.to_thread(_identity, binary, path)
    if before is not None and before in _headers:
        _headers.move_to_end(before)
        return _headers[before]
    run = await run_ffmpeg_captured(header_command(binary, path), PROBE_TIMEOUT_SECONDS)
    after = await asyncio.to_thread(_identity, binary, path)
    found = parse_media_header(run.stderr) is not None or subtitle_codec(run.stderr) is not None
    if found and before is not None and before == after:
        _headers[before] = run.stderr
        while len(_headers) > REMEMBERED_HEADERS:
            _headers.popitem(last=False)
    return run.stderr


async def probe_media(binary: str, path: Path, field: str) -> MediaHeader:
    """Reads ``path``'s header; a file that holds no media is an INVALID_INPUT failure naming
    ``field``."""
    header = await read_header(binary, path)
    info = parse_media_header(header)
    if info is None:
        reason = ffmpeg_reason(header)
        # The whole path: the client is shown it relative to the media root (public_paths).
        problem = f"{str(path)!r} is not a readable media file"
        raise invalid_input(
            field, f"{problem}: {reason}" if reason else problem, bounded_log_tail(header)
        )
    return info


async def probe_subtitles(binary: str, path: Path, field: str) -> str:
    """The codec of ``path``'s subtitles; a file that holds no subtitles, or subtitles that are
    pictures (the subtitles filter draws text), is an INVALID_INPUT failure naming ``field``."""
    header = await read_header(binary, path)
    codec = subtitle_codec(header)
    if codec is None:
        reason = ffmpeg_reason(header)
        problem = f"{str(path)!r} is not a subtitles file ffmpeg can read (srt, ass, vtt...)"
        raise invalid_input(
            field, f"{problem}: {reason}" if reason else problem, bounded_log_tail(header)
        )
    if codec not in TEXT_SUBTITLE_CODECS:
        raise invalid_input(
            field,
            f"{str(path)!r} holds {codec} subtitles, which are pictures: "
            "use text subtitles (srt, ass, vtt...)",
        )
    return codec
