"""A pool of render services behind one export service (real render services, real ffmpeg).

- spread: jobs created together over the pool, per render service (max and min), each job's
  service as the job records it;
- failover: one render service SIGKILLed while its jobs render; from the kill until each of its
  jobs runs on another (its next attempt placed there and rendering), p50/p99;
- rolling restart: jobs created at a steady pace while each render service in turn is stopped
  (SIGTERM: it drains) and started again; jobs re-rendered (a second attempt; aim 0), jobs
  failed, and each job's time from create to completed against the same pace without restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import grpc

from bench import ffmpeg_wrapper
from bench.report import BenchResult
from bench.stats import percentile
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import spec_pb2
from videojob_launcher import Role, Stack, StackConfig

NAME = "render_pool"
TITLE = "A pool of render services: spread of placements, failover after a render service dies"

RENDER_SERVICES = 2
POLL_SECONDS = 0.02
# The smoke form plays its renders at real time (bench.ffmpeg_wrapper): small frames, running
# as long to die or to drain in the middle of, for little CPU.
SMOKE_PACE = ffmpeg_wrapper.Pace((160, 120), 1.0)
SMOKE_ROLLING_SECONDS = 2.0


def _spec(seconds: float = 30.0, size: tuple[int, int] = (640, 480)) -> spec_pb2.RenderSpec:
    """By default a render of several seconds on a busy machine: long enough to die in the
    middle of."""
    spec = spec_pb2.RenderSpec()
    pattern = spec.source.test_pattern
    pattern.duration_seconds, pattern.fps = seconds, 25.0
    pattern.width, pattern.height = size
    spec.output.container = "mp4"
    spec.output.preset = "ultrafast"
    return spec


def _stack(workdir: Path, jobs: int, render_env: dict[str, str]) -> Stack:
    # Room on each for every job: the survivor takes the dead one's jobs without queueing them.
    per_service = str(jobs)
    config = StackConfig(
        workdir,
        database=f"sqlite:///{workdir / 'jobs.sqlite3'}",
        output_dir=workdir / "output",
        render=Role(count=RENDER_SERVICES, args=("--max-concurrent", per_service), env=render_env),
        export=Role(args=("--failover-after", "5", "--backoff-max", "1")),
        gateway=Role(count=0),
        stop_grace=10.0,
    )
    stack = Stack(config)
    try:
        stack.start_renders()
        stack.start_exports()
    except BaseException:
        stack.stop()
        raise
    return stack


async def _measure(stack: Stack, jobs: int, spec: spec_pb2.RenderSpec, result: BenchResult) -> None:
    channel = create_channel(stack.export.address)
    try:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        created = await asyncio.gather(
            *(
                stub.CreateExport(export_pb2.CreateExportRequest(spec=spec), timeout=10)
                for _ in range(jobs)
            )
        )
        ids = [job.id for job in created]

        async def current() -> list[export_pb2.VideoJob]:
            return [
                await stub.GetExport(export_pb2.GetExportRequest(id=job_id), timeout=10)
                for job_id in ids
            ]

        deadline = time.monotonic() + 60
        while True:
            seen = await current()
            if all(job.render_service.instance_id and job.progress > 0 for job in seen):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the jobs never all rendered")
            await asyncio.sleep(POLL_SECONDS)
        per_service = Counter(job.render_service.instance_id for job in seen)
        result.details["jobs_per_service"] = dict(per_service)
        counts = [per_service.get(key, 0) for key in per_service] + [0] * (
            RENDER_SERVICES - len(per_service)
        )
        result.add("jobs per render service, max", max(counts), "jobs")
        result.add("jobs per render service, min", min(counts), "jobs")
        result.add("max - min", max(counts) - min(counts), "jobs", at_most=1)

        by_address = {process.address: process for process in stack.renders}
        victim_address = seen[0].render_service.address
        victim = by_address[victim_address]
        moving = {job.id for job in seen if job.render_service.address == victim_address}
        killed_at = time.monotonic()
        await victim.akill()
        moved_after: dict[str, float] = {}
        deadline = killed_at + 60
        while len(moved_after) < len(moving):
            for job in await current():
                if job.id in moving and job.id not in moved_after:
                    elsewhere = job.render_service.address not in ("", victim_address)
                    if job.attempt >= 2 and elsewhere and job.attempt_progress > 0:
                        moved_after[job.id] = time.monotonic() - killed_at
            if time.monotonic() > deadline:
                raise RuntimeError("the dead render service's jobs never moved")
            await asyncio.sleep(POLL_SECONDS)
        samples = sorted(moved_after.values())
        result.details["failover_seconds"] = [round(value, 3) for value in samples]
        result.add("death to rendering elsewhere, p50", percentile(samples, 0.5), "s")
        result.add("death to rendering elsewhere, p99", percentile(samples, 0.99), "s", at_most=5)
        for job_id in ids:
            with contextlib.suppress(grpc.aio.AioRpcError):  # finished already
                await stub.CancelExport(export_pb2.CancelExportRequest(id=job_id), timeout=10)
    finally:
        await channel.close(None)


def _short_spec() -> spec_pb2.RenderSpec:
    return _spec(6.0, (320, 240))


async def _paced_jobs(
    stub: export_pb2_grpc.ExportServiceAsyncStub,
    count: int,
    gap: float,
    spec: spec_pb2.RenderSpec,
) -> list[export_pb2.VideoJob]:
    """``count`` jobs created ``gap`` seconds apart, each followed to its end."""

    async def one(index: int) -> export_pb2.VideoJob:
        await asyncio.sleep(index * gap)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec), timeout=10)
        request = export_pb2.WatchExportRequest(id=job.id)
        last = job
        async for update in stub.WatchExport(request, timeout=300):
            last = update
        return last

    return list(await asyncio.gather(*(one(index) for index in range(count))))


def _latencies(jobs: list[export_pb2.VideoJob]) -> list[float]:
    return sorted(
        job.finished_at.ToDatetime().timestamp() - job.created_at.ToDatetime().timestamp()
        for job in jobs
        if job.status == export_pb2.COMPLETED
    )


async def _rolling_restart(
    stack: Stack, count: int, gap: float, spec: spec_pb2.RenderSpec, result: BenchResult
) -> None:
    channel = create_channel(stack.export.address)
    try:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        calm = await _paced_jobs(stub, count, gap, spec)

        async def restart_each() -> None:
            await asyncio.sleep(gap)
            for process in stack.renders:
                await process.arestart()  # SIGTERM: it drains, then starts on the same port

        restarting, _ = await asyncio.gather(_paced_jobs(stub, count, gap, spec), restart_each())
    finally:
        await channel.close(None)
    rerendered = sum(job.attempt > 1 for job in restarting)
    failed = sum(job.status != export_pb2.COMPLETED for job in restarting)
    result.details["rolling_restart"] = {
        "jobs": count,
        "gap_s": gap,
        "attempts": [job.attempt for job in restarting],
        "statuses": [export_pb2.JobStatus.Name(job.status) for job in restarting],
    }
    result.add("rolling restart: jobs re-rendered", rerendered, "jobs", at_most=0)
    result.add("rolling restart: jobs failed", failed, "jobs", at_most=0)
    calm_p50 = percentile(_latencies(calm), 0.5)
    rolling_p50 = percentile(_latencies(restarting), 0.5)
    result.add("create to completed, p50, no restart", calm_p50, "s")
    result.add("create to completed, p50, rolling restart", rolling_p50, "s")
    result.add("added by the rolling restart, p50", rolling_p50 - calm_p50, "s")


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_jobs(workdir, 4, 4) if quick else run_jobs(workdir, 12, 16)


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: one job per render service, two paced jobs; small renders played at
    real time."""
    return run_jobs(workdir, RENDER_SERVICES, 2, SMOKE_PACE)


def run_jobs(
    workdir: Path, jobs: int, paced: int, render_pace: ffmpeg_wrapper.Pace | None = None
) -> BenchResult:
    """``jobs`` for the spread and the failover, ``paced`` jobs with and without restarts;
    with ``render_pace``, small renders played at that pace."""
    result = BenchResult(NAME, TITLE)
    result.details["setup"] = {"render_services": RENDER_SERVICES, "jobs": jobs}
    render_env: dict[str, str] = {}
    failover, rolling = _spec(), _short_spec()
    if render_pace is not None:
        render_env, _ = ffmpeg_wrapper.install(workdir, render_pace)
        failover = _spec(size=render_pace.size)
        rolling = _spec(SMOKE_ROLLING_SECONDS, render_pace.size)
    stack = _stack(workdir / "failover", jobs, render_env)
    try:
        asyncio.run(_measure(stack, jobs, failover, result))
    finally:
        stack.stop()
    stack = _stack(workdir / "rolling", paced, render_env)
    try:
        asyncio.run(_rolling_restart(stack, paced, 0.5, rolling, result))
    finally:
        stack.stop()
    return result
