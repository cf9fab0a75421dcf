"""Finds the harness's own ffmpeg processes in /proc.

Only processes whose command line mentions the harness's output directory count, so ffmpegs
started by anything else on the machine are never touched or reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FfmpegProcess:
    pid: int
    cmdline: tuple[str, ...]
    state: str


def process_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[-1].split()[0]


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[-1].split()[1])


def ffmpeg_processes(output_dir: Path, job_id: str | None = None) -> list[FfmpegProcess]:
    """Live (non-zombie) ffmpeg processes writing under ``output_dir`` (for ``job_id``)."""
    needle = str(output_dir)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        args = tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
        if not args or "ffmpeg" not in os.path.basename(args[0]):
            continue
        joined = " ".join(args)
        if needle not in joined or (job_id is not None and job_id not in joined):
            continue
        state = process_state(int(entry))
        if state in ("Z", "X", "?"):
            continue
        found.append(FfmpegProcess(int(entry), args, state))
    return found
