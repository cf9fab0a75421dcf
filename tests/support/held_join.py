"""An FFmpeg that holds a split job's join: the render services run it as their FFMPEG_BINARY.

It is the real FFmpeg, run through a shell script that looks at its arguments first. The join's
muxing is the FFmpeg that reads ``<scratch>/joins/<render id>/parts.ffconcat``: each such run is
logged (its pid and that list), and the first attempt's (render id ``<job>-join``) stops itself
with SIGSTOP before it reads anything, so the join render is running, and stays so, for as long
as a test needs to break something around it. The test finds the stopped process among its own
render services' children (/proc) and resumes it with SIGCONT (``resume``); later attempts
(``<job>-join-a2``) run freely. Nothing depends on timing: the process stops itself."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import child_pids
from videojob.ffmpeg_binary import ffmpeg_binary

CONCAT_LIST = "parts.ffconcat"

_WRAPPER = """#!/bin/sh
for arg do
  case "$arg" in
    */joins/*/{concat})
      echo "$$ $arg" >> "{log}"
      case "$arg" in
        */joins/*-join/{concat}) kill -STOP $$ ;;
      esac ;;
  esac
done
exec "{ffmpeg}" "$@"
"""


@dataclass(frozen=True)
class HoldingFFmpeg:
    """The script (``binary``) and the log of every join's muxing it ran (``log``)."""

    binary: Path
    log: Path

    @classmethod
    def write(cls, folder: Path) -> HoldingFFmpeg:
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "joins.log"
        log.touch()
        binary = folder / "ffmpeg-holding-joins"
        binary.write_text(_WRAPPER.format(concat=CONCAT_LIST, log=log, ffmpeg=ffmpeg_binary()))
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
        return cls(binary, log)

    def env(self) -> dict[str, str]:
        return {"FFMPEG_BINARY": str(self.binary)}

    def joins_run(self) -> list[str]:
        """The render id of every join muxing started so far, in order."""
        lines = self.log.read_text().splitlines()
        return [Path(line.split(" ", 1)[1]).parent.name for line in lines if " " in line]


def _joining(arguments: list[str], render_id: str) -> bool:
    suffix = f"/joins/{render_id}/{CONCAT_LIST}"
    return any(argument.endswith(suffix) for argument in arguments)


def _state(pid: int) -> str:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat_line.rpartition(")")[2].split()[0]


def _arguments(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def held_join(service_pid: int, render_id: str) -> int | None:
    """The pid of the join ``render_id``'s muxing, stopped, among the children of the render
    service ``service_pid`` (one of the test's own); None if there is none."""
    for pid in child_pids(service_pid):
        if _joining(_arguments(pid), render_id) and _state(pid) == "T":
            return pid
    return None


def resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
