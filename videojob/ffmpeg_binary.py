"""Where the FFmpeg executable comes from: FFMPEG_BINARY, else ``ffmpeg`` on PATH, else the
binary shipped in the imageio-ffmpeg wheel. No ffprobe is ever needed."""

from __future__ import annotations

import functools
import os
import shutil


@functools.cache
def ffmpeg_binary() -> str:
    override = os.environ.get("FFMPEG_BINARY")
    if override:
        return override
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())
