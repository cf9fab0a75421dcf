"""1. Overhead: wall time from ``POST /api/jobs`` to the ``completed`` SSE event, divided by
the wall time of the very ffmpeg command the render service ran (same binary, same argv, run
directly with its stdout and stderr drained). Direct and through-the-stack runs alternate."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench import procfs
from bench.jobs import create_job, follow_job, test_pattern_spec
from bench.report import BenchResult
from bench.stack import Stack, running_stack
from bench.stats import median
from videojob.ffmpeg_binary import ffmpeg_binary

NAME = "overhead"
TITLE = "Overhead vs ffmpeg run directly"
logger = logging.getLogger(__name__)

ARGV_POLL_SECONDS = 0.002
# Per form, two steps of (render seconds, size, pairs): the short render's fixed cost, the long
# render's ratio.
Step = tuple[float, tuple[int, int], int]
PLANS: dict[str, tuple[Step, Step]] = {
    "full": ((2.0, (1280, 720), 6), (20.0, (1280, 720), 3)),
    "quick": ((1.0, (320, 240), 2), (2.0, (320, 240), 2)),
    "smoke": ((0.5, (160, 120), 1), (1.0, (160, 120), 1)),
}


def ffmpeg_argv(argv: list[str], binary: str) -> list[str] | None:
    """``argv`` from the FFmpeg binary on, when it is an FFmpeg that writes -progress: the child
    may still be the prefix that ties it to the service's life, and the binary may be the one
    the service was given or one that a wrapper script on PATH executed."""
    if "-progress" not in argv:
        return None
    for index, arg in enumerate(argv):
        if arg == binary or Path(arg).name.startswith("ffmpeg"):
            return argv[index:]
    return None


async def _capture_argv(render_pid: int, stop: asyncio.Event) -> list[str]:
    """The argv of the render service's FFmpeg child (read in /proc): see ffmpeg_argv."""
    binary = ffmpeg_binary()
    while not stop.is_set():
        for child in procfs.children(render_pid):
            argv = ffmpeg_argv(procfs.cmdline(child), binary)
            if argv is not None:
                return argv
        await asyncio.sleep(ARGV_POLL_SECONDS)
    return []


async def _through_stack(stack: Stack, spec: dict[str, object]) -> tuple[float, str, str]:
    """Seconds from the POST to the terminal SSE event, the job id and its terminal event."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as client:
        started = time.perf_counter()
        job = await create_job(client, spec)
        events = await follow_job(stack.gateway.port, job["id"])
        elapsed = time.perf_counter() - started
    return elapsed, job["id"], events[-1].name if events else "none"


async def _warm_up_and_capture(stack: Stack, spec: dict[str, object]) -> tuple[list[str], str]:
    stop = asyncio.Event()
    capture = asyncio.create_task(_capture_argv(stack.render.pid, stop))
    _, job_id, outcome = await _through_stack(stack, spec)
    stop.set()
    argv = await capture
    if outcome != "completed":
        raise RuntimeError(f"warm-up job {job_id} ended {outcome}")
    if not argv:
        raise RuntimeError("could not read the render service's ffmpeg argv from /proc")
    return argv, job_id


def _run_direct(argv: list[str], job_id: str, repetition: int) -> float:
    """Runs ``argv`` with the job id in its paths replaced, so it writes its own file."""
    own_name = f"direct-{repetition}-{os.getpid()}"
    own_argv = [arg.replace(job_id, own_name) for arg in argv]
    started = time.perf_counter()
    completed = subprocess.run(own_argv, capture_output=True, check=False, timeout=600)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"direct ffmpeg failed: {completed.stderr.decode()[-500:]}")
    for arg in own_argv:
        if own_name in arg:
            Path(arg.removeprefix("file:")).unlink(missing_ok=True)
    return elapsed


@dataclass
class OverheadRun:
    duration_seconds: float
    size: str
    argv: list[str]
    direct_seconds: list[float]
    stack_seconds: list[float]
    outcomes: list[str]

    @property
    def median_ratio(self) -> float:
        pairs = zip(self.stack_seconds, self.direct_seconds, strict=True)
        return median([through / direct for through, direct in pairs])

    @property
    def median_extra_ms(self) -> float:
        pairs = zip(self.stack_seconds, self.direct_seconds, strict=True)
        return median([through - direct for through, direct in pairs]) * 1000


async def _measure(stack: Stack, duration: float, size: tuple[int, int], pairs: int) -> OverheadRun:
    spec = test_pattern_spec(duration, *size)
    argv, warm_job = await _warm_up_and_capture(stack, spec)
    # Recorded with the binary's name only: the results name no path of the machine.
    recorded_argv = [Path(argv[0]).name, *argv[1:]]
    run = OverheadRun(duration, f"{size[0]}x{size[1]}", recorded_argv, [], [], [])
    for repetition in range(pairs):
        # Alternate which goes first, so drift in the machine's load hits both alike.
        if repetition % 2 == 0:
            run.direct_seconds.append(
                await asyncio.to_thread(_run_direct, argv, warm_job, repetition)
            )
        elapsed, _, outcome = await _through_stack(stack, spec)
        run.stack_seconds.append(elapsed)
        run.outcomes.append(outcome)
        if repetition % 2 == 1:
            run.direct_seconds.append(
                await asyncio.to_thread(_run_direct, argv, warm_job, repetition)
            )
    return run


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_plan(workdir, PLANS["quick" if quick else "full"])


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: one pair of each step, tiny renders."""
    return run_plan(workdir, PLANS["smoke"])


def run_plan(workdir: Path, plan: tuple[Step, Step]) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    with running_stack(workdir, max_concurrent=1) as stack:
        runs = [asyncio.run(_measure(stack, *step)) for step in plan]
    short, long = runs
    for item in runs:
        label = f"{item.duration_seconds:g} s {item.size}"
        result.add(f"{label}: direct ffmpeg (median)", median(item.direct_seconds), "s")
        result.add(f"{label}: through the stack (median)", median(item.stack_seconds), "s")
    result.add(f"ratio, {long.duration_seconds:g} s render", long.median_ratio, "x", at_most=1.05)
    result.add(
        f"fixed cost ({short.duration_seconds:g} s render)",
        short.median_extra_ms,
        "ms",
        at_most=150,
    )
    result.details = {
        "runs": [
            {
                **asdict(item),
                "median_ratio": item.median_ratio,
                "median_extra_ms": item.median_extra_ms,
            }
            for item in runs
        ],
        "preset": "veryfast",
        "codec": "h264 + aac in mp4",
        "all_completed": all(o == "completed" for item in runs for o in item.outcomes),
    }
    return result
