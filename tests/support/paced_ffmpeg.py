"""A real FFmpeg that renders test patterns of one size (PACED_SIZE) at a set multiple of playback
speed (``-readrate``), so a render lasts as long as a test needs to break things in the middle of
it without keeping a core busy: a render's CPU is its frames' encoding, whatever its pace, so a
short render of small frames at a set pace costs a tenth of a long one of big frames at full
speed, and lasts as long. Everything else (other sizes, files, probes, scans) runs at full speed.
"""

from __future__ import annotations

import shlex
import stat
from pathlib import Path

from videojob.ffmpeg_binary import ffmpeg_binary

PACED_SIZE = (176, 144)

_SCRIPT = """#!/bin/sh
case " $* " in
    *" -i testsrc2=size={width}x{height}:"*) exec {ffmpeg} -readrate {speed} "$@" ;;
esac
exec {ffmpeg} "$@"
"""


def write_paced_ffmpeg(folder: Path, speed: float) -> Path:
    """An executable in ``folder`` that runs this machine's FFmpeg, reading a PACED_SIZE test
    pattern at ``speed`` times playback speed (1: real time)."""
    width, height = PACED_SIZE
    script = folder / f"ffmpeg-paced-{speed:g}x"
    script.write_text(
        _SCRIPT.format(
            width=width, height=height, ffmpeg=shlex.quote(ffmpeg_binary()), speed=f"{speed:g}"
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script
