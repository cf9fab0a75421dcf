"""A description of the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from videojob.ffmpeg_binary import ffmpeg_binary


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _ffmpeg_version() -> str:
    try:
        result = subprocess.run(
            [ffmpeg_binary(), "-hide_banner", "-version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError as exc:
        return f"unavailable ({exc})"
    first = result.stdout.splitlines()[0] if result.stdout else "unknown"
    return first.removeprefix("ffmpeg version ").split(" Copyright")[0]


def describe() -> dict[str, str | int | float]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "ram_gib": round(_ram_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ffmpeg": _ffmpeg_version(),
        "ffmpeg_binary": Path(ffmpeg_binary()).name,
    }
