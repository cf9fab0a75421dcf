"""What a file holds, read from the header ``ffmpeg -i FILE`` prints, in a subprocess (the event
loop never waits on it). Only local files are opened (``-protocol_whitelist file``), and
playlist-like demuxers, which name other files, do not count as media."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from videojob.ffmpeg_binary import ffmpeg_binary

PROBE_TIMEOUT_SECONDS = 30.0
_INPUT = re.compile(r"^Input #0, (?P<formats>[^ ]+), from ", re.MULTILINE)
_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_VIDEO = re.compile(
    r"Stream #0:\d+\S*: Video: (?P<codec>[\w-]+).*?(?<![\dx])(?P<w>\d{1,5})x(?P<h>\d{1,5})(?!\d)"
)
_AUDIO = re.compile(r"Stream #0:\d+\S*: Audio: (?P<codec>[\w-]+)")
# Demuxers that read other files or generate input rather than hold media themselves.
_REFUSED_FORMATS = frozenset({"concat", "hls", "dash", "lavfi", "tty", "ffmetadata"})


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration_seconds: float | None
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None


def parse_header(header: str) -> MediaInfo | None:
    """The media ``header`` describes, or None when it is not media."""
    source = _INPUT.search(header)
    video = _VIDEO.search(header)
    audio = _AUDIO.search(header)
    if source is None or (video is None and audio is None):
        return None
    formats = source["formats"].rstrip(",")
    if _REFUSED_FORMATS & set(formats.split(",")):
        return None
    duration = _DURATION.search(header)
    seconds = None
    if duration is not None:
        hours, minutes, rest = duration.groups()
        seconds = int(hours) * 3600 + int(minutes) * 60 + float(rest)
    return MediaInfo(
        format_name=formats,
        duration_seconds=seconds,
        width=int(video["w"]) if video else None,
        height=int(video["h"]) if video else None,
        video_codec=video["codec"] if video else None,
        audio_codec=audio["codec"] if audio else None,
    )


async def probe_media(path: Path) -> MediaInfo | None:
    process = await asyncio.create_subprocess_exec(
        ffmpeg_binary(),
        "-hide_banner",
        "-nostdin",
        "-protocol_whitelist",
        "file",
        "-i",
        f"file:{path}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        return None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    return parse_header(stderr.decode(errors="replace"))
