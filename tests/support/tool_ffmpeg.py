"""The FFmpeg the tests make and inspect media with, apart from the one under test.

The product runs ``videojob.ffmpeg_binary.ffmpeg_binary()`` (FFMPEG_BINARY, else the one on
PATH, else the wheel's); a test's own inputs and its independent look at an output need no
particular build. They use the imageio-ffmpeg wheel's, a static build that starts in about
0.01 s of CPU, where Debian's loads some 200 shared libraries first (about 0.13 s a run, and
the tests make hundreds of such runs)."""

from __future__ import annotations

import functools

import imageio_ffmpeg


@functools.cache
def tool_ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())
