"""Starting FFmpeg as an asyncio subprocess in its own process group, and stopping it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from render_service.failures import FailureCode, RenderFailure

KILL_WAIT_SECONDS = 5.0


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _dies_with(parent: int) -> Callable[[], None] | None:
    """A child set-up (between fork and exec) that SIGKILLs the child when ``parent`` dies, even
    by SIGKILL: FFmpeg ignores the broken progress pipe and would render on for hours."""
    libc = _libc
    if libc is None:
        return None
    prctl = libc.prctl

    def set_up() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return set_up


async def start_ffmpeg(argv: Sequence[str]) -> asyncio.subprocess.Process:
    """Runs ``argv`` (no shell) in a new session, so its whole group can be killed at once, and
    ties its life to this process's."""
    # Forked from the event loop's thread, which lives as long as the process: the death signal
    # follows the thread that forked. The set-up only calls prctl and getppid, safe after fork.
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_dies_with(os.getpid()),
    )


async def kill_process_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILLs the process's group (a SIGSTOPped FFmpeg ignores SIGTERM) and reaps it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), KILL_WAIT_SECONDS)


@dataclass(frozen=True)
class CapturedRun:
    returncode: int
    stdout: str
    stderr: str


async def run_ffmpeg_captured(argv: Sequence[str], time_limit: float) -> CapturedRun:
    """Runs a short FFmpeg command to completion; kills its group on timeout or cancellation.
    Raises FFMPEG_ERROR when FFmpeg cannot be started."""
    try:
        process = await start_ffmpeg(argv)
    except OSError as exc:
        raise RenderFailure(FailureCode.FFMPEG_ERROR, f"cannot start ffmpeg: {exc}") from None
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except BaseException as exc:
        await asyncio.shield(kill_process_group(process))
        if isinstance(exc, TimeoutError):
            raise RenderFailure(
                FailureCode.FFMPEG_ERROR, f"ffmpeg did not finish within {time_limit:g} s"
            ) from None
        raise
    return CapturedRun(
        returncode=process.returncode if process.returncode is not None else -1,
        stdout=stdout.decode(errors="replace"),
        stderr=stderr.decode(errors="replace"),
    )
