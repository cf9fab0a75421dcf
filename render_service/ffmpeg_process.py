"""Starting FFmpeg as an asyncio subprocess in its own process group, and stopping it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from render_service.failures import FailureCode, RenderFailure
from videojob import metrics

logger = logging.getLogger(__name__)

KILL_WAIT_SECONDS = 5.0


def watch_children_with_pidfd() -> None:
    """On Python 3.11, asyncio waits for each child in a thread of its own: starting that thread
    and handing its exit back to the loop cost milliseconds at every FFmpeg's start and exit on
    a busy service. With a pidfd the loop itself sees the exit, as 3.12 and later do by
    default (where this changes nothing). 3.11's pidfd watcher serves the one loop it is
    attached to: call this from the running loop of a process's main."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel before 5.3, or a sandbox that forbids it
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


# Run by /bin/sh once the parent-death signal is set: the command runs only if its parent is
# still the process that started it ($0). A parent that died before setpriv set the signal
# would never send it, and the command, reparented, would run for nobody.
_WHILE_PARENT_LIVES = 'test "$PPID" = "$0" && exec "$@"; exit 137'


@functools.cache
def parent_death_prefix(parent: int | None = None) -> tuple[str, ...]:
    """The prefix that makes FFmpeg die with this process (``parent``: this one by default),
    even by SIGKILL: util-linux's setpriv sets the parent-death signal, then a shell checks
    that its parent is still that process and execs. (Not a preexec_fn: gRPC's fork handlers
    crash a child that runs Python after fork.) Without it a killed service's FFmpeg, which
    ignores its broken progress pipe, would render on for nobody, and write a partial file
    the export service may already have removed."""
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None
    if setpriv is None:
        logger.warning("setpriv not found: FFmpeg will outlive a killed render service")
        return ()
    expected = os.getpid() if parent is None else parent
    return (
        setpriv,
        "--pdeathsig",
        "KILL",
        "--",
        "/bin/sh",
        "-c",
        _WHILE_PARENT_LIVES,
        str(expected),
    )


async def start_ffmpeg(argv: Sequence[str]) -> asyncio.subprocess.Process:
    """Runs ``argv`` (no shell) in a new session, so its whole group can be killed at once, and
    ties its life to this process's. The process forks from the event loop's thread, which lives
    as long as the process (the parent-death signal follows the thread that forked)."""
    process = await asyncio.create_subprocess_exec(
        *parent_death_prefix(),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    metrics.FFMPEG_PROCESSES.inc()
    reaped = asyncio.create_task(process.wait(), name=f"ffmpeg-{process.pid}-reaped")
    _alive.add(reaped)
    reaped.add_done_callback(_on_reaped)
    return process


# One task per live FFmpeg process, done when it has been reaped.
_alive: set[asyncio.Task[int]] = set()


def _on_reaped(task: asyncio.Task[int]) -> None:
    _alive.discard(task)
    metrics.FFMPEG_PROCESSES.dec()


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
