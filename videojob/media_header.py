"""What a media file holds, read from the header ``ffmpeg -i FILE`` prints (no ffprobe needed):
the one reading of it, for the gateway (an upload) and the render service (an input). Only
local files are opened (``-protocol_whitelist file``); demuxers that read other files or
generate their input (a concat list, a playlist, lavfi) do not count as media, nor as
subtitles."""

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
_SUBTITLE = re.compile(r"Stream #0:\d+\S*: Subtitle: (?P<codec>[\w-]+)")
_REFUSED_FORMATS = frozenset({"concat", "hls", "dash", "lavfi", "tty", "ffmetadata"})
# Subtitle codecs FFmpeg decodes to text, which its subtitles filter (libass) draws; the others
# (dvd_subtitle, hdmv_pgs_subtitle, dvb_subtitle, xsub) are pictures it cannot.
TEXT_SUBTITLE_CODECS = frozenset(
    {
        "ass",
        "ssa",
        "subrip",
        "srt",
        "webvtt",
        "mov_text",
        "text",
        "microdvd",
        "mpl2",
        "jacosub",
        "pjs",
        "realtext",
        "sami",
        "stl",
        "subviewer",
        "subviewer1",
        "vplayer",
    }
)


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


def _input_formats(header: str) -> str | None:
    """The demuxer's names of a file ``header`` describes, or None (no input, or a demuxer that
    reads other files or generates its input)."""
    source = _INPUT.search(header)
    if source is None:
        return None
    formats = source["formats"].rstrip(",")
    if _REFUSED_FORMATS & set(formats.split(",")):
        return None
    return formats


def subtitle_codec(header: str) -> str | None:
    """The codec of the first subtitle stream ``header`` describes (what the subtitles filter
    draws), or None when it describes none."""
    subtitle = _SUBTITLE.search(header)
    if subtitle is None or _input_formats(header) is None:
        return None
    return subtitle["codec"]


def parse_media_header(header: str) -> MediaHeader | None:
    """The media ``header`` describes, or None when it describes none."""
    video = _VIDEO.search(header)
    audio = _AUDIO.search(header)
    formats = _input_formats(header)
    if formats is None or (video is None and audio is None):
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
