"""What ffmpeg itself reads from a media file, independent of the services' own checks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.tool_ffmpeg import tool_ffmpeg

_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


def media_header(path: Path) -> str:
    """What ``ffmpeg -i`` prints about the file: its container, streams and duration."""
    return subprocess.run(
        [tool_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path)],
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


_VIDEO_SIZE = re.compile(r"Stream #\d+:\d+.*?: Video: .*?(?<![\dx])(\d{2,5})x(\d{2,5})(?!\d)")


def video_size(path: Path) -> tuple[int, int]:
    """The width and height of the file's first video stream, as ffmpeg reads them."""
    header = media_header(path)
    match = _VIDEO_SIZE.search(header)
    assert match is not None, header
    return int(match.group(1)), int(match.group(2))


def make_clip(path: Path, *, width: int = 160, height: int = 120, seconds: float = 1.0) -> Path:
    """A tiny H.264 MP4 (moov atom first, so a truncated copy still has a readable header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            tool_ffmpeg(),
            "-hide_banner",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={width}x{height}:rate=10:duration={seconds}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path
