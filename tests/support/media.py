"""What ffmpeg itself reads from a media file, independent of the services' own checks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from videojob.ffmpeg_binary import ffmpeg_binary

_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


def media_header(path: Path) -> str:
    """What ``ffmpeg -i`` prints about the file: its container, streams and duration."""
    return subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stderr


def header_duration(path: Path) -> float | None:
    """The container duration ffmpeg reads, or None when it finds none."""
    match = _DURATION.search(media_header(path))
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def media_duration(path: Path) -> float:
    """The container duration ffmpeg reads; the file must have one."""
    duration = header_duration(path)
    assert duration is not None, media_header(path)
    return duration
