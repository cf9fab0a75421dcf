"""An ffmpeg stand-in (FFMPEG_BINARY) that runs the real binary and, for a render (an argv with
``-progress``), logs the wall-clock time of each progress block and of ffmpeg's exit.

bash's $EPOCHREALTIME needs no fork; the block is stamped when the wrapper reads its last line,
before passing that line on, so the lags measured from these stamps include the wrapper's own
hop and no reader can see a block before its stamp.

Installed with a ``Pace``, it renders test patterns of that one size at a set multiple of
playback speed (``-readrate``): a render that lasts seconds, for blocks before its last, without
keeping a core busy all that time (a render's CPU is its frames' encoding, whatever its pace)."""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from videojob.ffmpeg_binary import ffmpeg_binary

SCRIPT = r"""#!/bin/bash
real="$BENCH_REAL_FFMPEG"
log="$BENCH_FFMPEG_LOG"
paced="${BENCH_PACED_PATTERN:-}"
render=0
tag="$$"
pace=()
for arg in "$@"; do
    [[ $arg == -progress ]] && render=1
    [[ $arg == file:* ]] && tag="${arg#file:}"
    [[ -n $paced && $arg == "$paced"* ]] && pace=(-readrate "$BENCH_READRATE")
done
(( render )) || exec "$real" "$@"
printf 'start %s 0 %s\n' "$EPOCHREALTIME" "$tag" >> "$log"
"$real" "${pace[@]}" "$@" | {
    frame=N/A
    while IFS= read -r line; do
        case $line in
            frame=*) frame=${line#*=} ;;
            progress=*) printf 'block %s %s %s\n' "$EPOCHREALTIME" "$frame" "$tag" >> "$log" ;;
        esac
        printf '%s\n' "$line"
    done
}
status=${PIPESTATUS[0]}
printf 'exit %s %s %s\n' "$EPOCHREALTIME" "$status" "$tag" >> "$log"
exit "$status"
"""


@dataclass
class RenderTrace:
    """What the wrapper saw of one render: block times with the frames written, and the exit
    time."""

    started: float = math.nan
    blocks: list[tuple[float, int]] = field(default_factory=list)
    exited: float = math.nan
    status: int = -1


@dataclass(frozen=True)
class Pace:
    """Renders of a ``size`` test pattern read at ``readrate`` times playback speed."""

    size: tuple[int, int]
    readrate: float


def install(directory: Path, pace: Pace | None = None) -> tuple[dict[str, str], Path]:
    """Writes the wrapper; returns the environment for the render service and the log path."""
    script = directory / "ffmpeg-timestamps.sh"
    script.write_text(SCRIPT)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = directory / "ffmpeg-timestamps.log"
    log.touch()
    env = {
        "FFMPEG_BINARY": str(script),
        "BENCH_REAL_FFMPEG": os.path.realpath(ffmpeg_binary()),
        "BENCH_FFMPEG_LOG": str(log),
    }
    if pace is not None:
        width, height = pace.size
        env["BENCH_PACED_PATTERN"] = f"testsrc2=size={width}x{height}:"
        env["BENCH_READRATE"] = f"{pace.readrate:g}"
    return env, log


def read_traces(log: Path) -> dict[str, RenderTrace]:
    """Traces by output file path (which contains the job id)."""
    traces: dict[str, RenderTrace] = {}
    for line in log.read_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) != 4:
            continue
        kind, when, value, tag = parts
        trace = traces.setdefault(tag, RenderTrace())
        if kind == "start":
            trace.started = float(when)
        elif kind == "block" and value.lstrip("-").isdigit():
            trace.blocks.append((float(when), max(int(value), 0)))
        elif kind == "exit":
            trace.exited = float(when)
            trace.status = int(value)
    return traces


def trace_for(traces: dict[str, RenderTrace], job_id: str) -> RenderTrace | None:
    """The job's last render (a retried render logs again under the same path)."""
    found = [trace for tag, trace in traces.items() if job_id in tag]
    return found[-1] if found else None
