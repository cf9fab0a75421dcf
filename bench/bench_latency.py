"""2. Completion latency: ffmpeg's exit -> ``completed`` at an SSE client and at a GetExport
poller. 3. Progress freshness: an ffmpeg progress block -> the SSE event showing it.

ffmpeg's exit and its progress blocks are stamped by bench.ffmpeg_wrapper (the render
service's FFMPEG_BINARY). Jobs run one at a time so each measures latency, not queueing."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import grpc
import httpx

from bench import ffmpeg_wrapper, latency_path
from bench.jobs import create_job, follow_job, test_pattern_spec
from bench.report import BenchResult
from bench.stack import Stack, running_stack
from bench.stats import percentile
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.sse_client import SseFrame

NAME = "latency"
TITLE = "Completion latency and progress freshness"

POLL_INTERVAL_SECONDS = 0.005
RENDER_BAND_START = 2.0
RENDER_BAND_END = 95.0
# Percent in the store is rounded to 0.01; a block "matches" an event within this.
MATCH_TOLERANCE_PERCENT = 0.02


async def _poll_until_completed(stub: export_pb2_grpc.ExportServiceAsyncStub, job_id: str) -> float:
    """Wall-clock time of the first GetExport answer that shows the job terminal."""
    while True:
        job = await stub.GetExport(export_pb2.GetExportRequest(id=job_id), timeout=10)
        if job.status in (export_pb2.COMPLETED, export_pb2.FAILED, export_pb2.CANCELLED):
            return time.time() if job.status == export_pb2.COMPLETED else math.nan
        await asyncio.sleep(POLL_INTERVAL_SECONDS)


def _freshness(
    events: list[SseFrame], trace: ffmpeg_wrapper.RenderTrace, frames: int
) -> tuple[list[tuple[SseFrame, float]], int]:
    """The Rendering-stage SSE events with the stamp of the block each shows; and how many
    such events found no block."""
    lags: list[tuple[SseFrame, float]] = []
    unmatched = 0
    band = RENDER_BAND_END - RENDER_BAND_START
    for event in events[1:]:  # the first event is the snapshot at connect time
        job = event.job
        if event.name != "progress" or job.get("stage") != "Rendering":
            continue
        percent = float(job["progress"])
        candidates = [
            stamped
            for stamped, written in trace.blocks
            if stamped <= event.received
            and abs(RENDER_BAND_START + band * min(written / frames, 1.0) - percent)
            <= MATCH_TOLERANCE_PERCENT
        ]
        if candidates:
            lags.append((event, min(candidates)))
        else:
            unmatched += 1
    return lags, unmatched


async def _measure(stack: Stack, log: Path, jobs: int, spec: dict[str, object]) -> BenchResult:
    result, _ = await _measure_traced(stack, log, jobs, spec)
    return result


async def _measure_traced(
    stack: Stack, log: Path, jobs: int, spec: dict[str, object]
) -> tuple[BenchResult, list[tuple[str, SseFrame, float, str]]]:
    """The result, and what the hop breakdown needs: per traced event, its job, the SSE frame,
    the ffmpeg stamp it follows and its kind."""
    pattern = spec["source"]["testPattern"]  # type: ignore[index]
    frames = round(float(pattern["durationSeconds"]) * float(pattern["fps"]))
    sse_lags: list[float] = []
    poll_lags: list[float] = []
    fresh_lags: list[float] = []
    unmatched = 0
    outcomes: list[str] = []
    traced: list[tuple[str, SseFrame, float, str]] = []
    async with (
        httpx.AsyncClient(base_url=stack.url, timeout=60) as client,
        grpc.aio.insecure_channel(stack.export.address) as channel,
    ):
        stub: export_pb2_grpc.ExportServiceAsyncStub = export_pb2_grpc.ExportServiceStub(channel)
        for _ in range(jobs):
            job = await create_job(client, spec)
            events, polled = await asyncio.gather(
                follow_job(stack.gateway.port, job["id"]),
                _poll_until_completed(stub, job["id"]),
            )
            outcomes.append(events[-1].name)
            trace = ffmpeg_wrapper.trace_for(ffmpeg_wrapper.read_traces(log), job["id"])
            if trace is None or events[-1].name != "completed":
                continue
            sse_lags.append(events[-1].received - trace.exited)
            poll_lags.append(polled - trace.exited)
            traced.append((job["id"], events[-1], trace.exited, "completion"))
            matched, missed = _freshness(events, trace, frames)
            fresh_lags.extend(event.received - block for event, block in matched)
            traced.extend((job["id"], event, block, "progress") for event, block in matched)
            unmatched += missed
    result = BenchResult(NAME, TITLE)
    ms = 1000.0
    result.add("exit -> completed at SSE, p50", percentile(sse_lags, 0.5) * ms, "ms")
    result.add("exit -> completed at SSE, p99", percentile(sse_lags, 0.99) * ms, "ms", at_most=50)
    result.add("exit -> completed at poller, p50", percentile(poll_lags, 0.5) * ms, "ms")
    result.add(
        "exit -> completed at poller, p99", percentile(poll_lags, 0.99) * ms, "ms", at_most=50
    )
    result.add("progress block -> SSE, p50", percentile(fresh_lags, 0.5) * ms, "ms")
    result.add("progress block -> SSE, p99", percentile(fresh_lags, 0.99) * ms, "ms")
    result.details = {
        "jobs": jobs,
        "spec": spec,
        "outcomes": {name: outcomes.count(name) for name in set(outcomes)},
        "all_terminal": len(outcomes) == jobs,
        "completion_samples": len(sse_lags),
        "freshness_samples": len(fresh_lags),
        "freshness_unmatched_events": unmatched,
        "poll_interval_ms": POLL_INTERVAL_SECONDS * 1000,
        "sse_lags_ms": [lag * ms for lag in sse_lags],
        "poll_lags_ms": [lag * ms for lag in poll_lags],
        "freshness_lags_ms": [lag * ms for lag in fresh_lags],
    }
    return result, traced


def _hops(stamps_file: Path, traced: list[tuple[str, SseFrame, float, str]]) -> dict[str, object]:
    """Per hop of each path, p50 and p99 over the traced events (see bench.latency_path)."""
    by_job = latency_path.read_stamps(stamps_file)
    completion = latency_path.Breakdown()
    progress = latency_path.Breakdown()
    for job_id, event, origin, kind in traced:
        stamps = latency_path.stamps_of(by_job, job_id)
        version = int(event.id or 0)
        if kind == "completion":
            completion.add(latency_path.completion_path(stamps, origin, event.received, version))
        else:
            path = latency_path.progress_path(stamps, origin, event.received, version)
            if path is not None:
                progress.add(path)
    return {"completion": completion.summary(), "progress": progress.summary()}


def run(workdir: Path, quick: bool) -> BenchResult:
    if quick:
        return run_jobs(workdir, 2, test_pattern_spec(1.0, 640, 360))
    return run_jobs(workdir, 50, test_pattern_spec(4.0, 1280, 720))


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: one tiny job."""
    return run_jobs(workdir, 1, test_pattern_spec(1.0, 160, 120, preset="ultrafast"))


def run_jobs(workdir: Path, jobs: int, spec: dict[str, object]) -> BenchResult:
    env, log = ffmpeg_wrapper.install(workdir)
    stamps_file = workdir / "stamps.log"
    with running_stack(workdir, render_env=env, max_concurrent=1, stamps_file=stamps_file) as stack:
        result, traced = asyncio.run(_measure_traced(stack, log, jobs, spec))
    # The services write their stamps as they exit, so the hops are read after the stack.
    result.details["hops"] = _hops(stamps_file, traced)
    return result
