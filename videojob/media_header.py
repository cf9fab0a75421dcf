"""What a media file holds, read from the header ``ffmpeg -i FILE`` prints (no ffprobe needed):
the one reading of it, for the gateway (an upload) and the render service (an input). Only
local files are opened (``-protocol_whitelist file``); demuxers that read other files or
generate their input (a concat list, a playlist, lavfi) do not count as media."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_INPUT = re.compile(r"^Input #0, (?P<formats>[^ ]+), from ", re.MULTILINE)
_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_VIDEO = re.compile(
    r"Stream #0:\d+\S*: Video: (?P<codec>[\w-]+).*?(?<![\dx])(?P<w>\d{1,5})x(?P<h>\d{1,5})(?!\d)"
)
_AUDIO = re.compile(r"Stream #0:\d+\S*: Audio: (?P<codec>[\w-]+)")
_REFUSED_FORMATS = frozenset({"concat", "hls", "dash", "lavfi", "tty", "ffmetadata"})


@dataclass(frozen=True)
class MediaHeader:
    format_name: str
    duration_seconds: float | None
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None


def header_command(binary: str, path: Path) -> list[str]:
    """The FFmpeg command that prints ``path``'s header (on stderr) and reads nothing else."""
    return [binary, "-hide_banner", "-nostdin", "-protocol_whitelist", "file", "-i", f"file:{path}"]


def parse_media_header(header: str) -> MediaHeader | None:
    """The media ``header`` describes, or None when it describes none."""
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
    return MediaHeader(
        format_name=formats,
        duration_seconds=seconds,
        width=int(video["w"]) if video else None,
        height=int(video["h"]) if video else None,
        video_codec=video["codec"] if video else None,
        audio_codec=audio["codec"] if audio else None,
    )
