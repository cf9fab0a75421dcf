"""Cross-replica change latency: a change written by export replica A (a CancelExport sent to it)
until the SSE client of a gateway attached only to replica B receives it, p50/p99; with change
notifications (LISTEN/NOTIFY) and poll-only (``--no-change-notifications``: the batched poll,
every ``--change-poll-interval``).

Two export replicas share a PostgreSQL database of this run (on ``VIDEOJOB_BENCH_POSTGRES``);
the synthetic render server keeps each job running quietly. Each sample is one job: created on
A, its event stream opened on the gateway (B) and its first event received, then the cancel sent
to A (at a random moment, so that samples do not lock onto the poll's rhythm) and the clock
stopped at the ``cancelled`` event. The time includes A's write and the
gateway's hop, so it is what a user watching through another replica waits."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import asyncpg
import httpx

from bench.postgres import POSTGRES_ADMIN_URL, bench_database
from bench.report import BenchResult
from bench.stack import SYNTHETIC_RENDER_MODULE
from bench.stats import percentile
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import spec_pb2
from videojob.sse_client import aframes
from videojob_launcher import Role, Stack, StackConfig

NAME = "replica_changes"
TITLE = "A change on one export replica to an SSE client through another (PostgreSQL)"

POLL_INTERVAL_SECONDS = 0.5
# The synthetic render keeps the job running (and quiet) for longer than a sample takes.
RENDER_SECONDS = 600.0
RENDER_EVENTS_PER_SECOND = 0.2
MODES = (("notifications", ()), ("poll only", ("--no-change-notifications",)))


def _spec() -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    pattern = spec.source.test_pattern
    pattern.duration_seconds, pattern.width, pattern.height, pattern.fps = 2.0, 160, 120, 10.0
    spec.output.container = "mp4"
    return spec


def _stack(workdir: Path, database: str, export_args: tuple[str, ...]) -> Stack:
    """Render (synthetic), replicas A and B, and a gateway given B's address alone."""
    config = StackConfig(
        workdir,
        database=database,
        output_dir=workdir / "output",
        render=Role(
            module=SYNTHETIC_RENDER_MODULE,
            args=("--duration", str(RENDER_SECONDS), "--rate", str(RENDER_EVENTS_PER_SECOND)),
        ),
        export=Role(
            count=2,
            args=("--change-poll-interval", str(POLL_INTERVAL_SECONDS), *export_args),
        ),
        gateway=Role(count=1),
        stop_grace=10.0,
    )
    stack = Stack(config)
    try:
        stack.start_renders()
        stack.start_exports()
        stack.start_gateways(export_addr=stack.exports[1].address)
    except BaseException:
        stack.stop()
        raise
    return stack


async def _sample(
    http: httpx.AsyncClient, writer: export_pb2_grpc.ExportServiceAsyncStub, request_id: str
) -> float:
    job = await writer.CreateExport(
        export_pb2.CreateExportRequest(request_id=request_id, spec=_spec()), timeout=10
    )
    opened = asyncio.Event()

    async def cancelled_at() -> float:
        async with http.stream("GET", f"/api/jobs/{job.id}/events") as response:
            async for frame in aframes(response.aiter_lines()):
                if not frame.is_event:
                    continue
                if frame.name == "cancelled":
                    return time.perf_counter()
                opened.set()
        raise RuntimeError(f"the event stream of {job.id} ended without its cancel")

    reader = asyncio.create_task(cancelled_at())
    try:
        await asyncio.wait_for(opened.wait(), 30)
        # Samples taken back to back would each start just after a poll: spread them.
        await asyncio.sleep(random.uniform(0, POLL_INTERVAL_SECONDS))
        sent = time.perf_counter()
        await writer.CancelExport(export_pb2.CancelExportRequest(id=job.id), timeout=10)
        received = await asyncio.wait_for(reader, 30)
    finally:
        reader.cancel()
    return received - sent


async def _measure(stack: Stack, samples: int, label: str) -> list[float]:
    channel = create_channel(stack.exports[0].address)
    try:
        writer = export_pb2_grpc.ExportServiceStub(channel)
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            return [
                await _sample(http, writer, f"bench-{label}-{index}") for index in range(samples)
            ]
    finally:
        await channel.close(None)


async def _run(workdir: Path, samples: int, result: BenchResult) -> None:
    for label, export_args in MODES:
        async with bench_database("replicas") as database:
            stack = await asyncio.to_thread(
                _stack, workdir / label.replace(" ", "-"), database, export_args
            )
            try:
                latencies = await _measure(stack, samples, label.replace(" ", "-"))
            finally:
                await asyncio.to_thread(stack.stop)
        aim = 0.05 if label == "notifications" else 1.0
        result.add(f"{label}: p50", percentile(latencies, 0.5) * 1000, "ms")
        result.add(f"{label}: p99", percentile(latencies, 0.99) * 1000, "ms", at_most=aim * 1000)
        result.details[label] = {
            "samples": len(latencies),
            "max_ms": round(max(latencies) * 1000, 1),
        }


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_samples(workdir, 6 if quick else 60)


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: one sample per mode."""
    return run_samples(workdir, 1)


def run_samples(workdir: Path, samples: int) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    result.details["setup"] = {
        "replicas": 2,
        "gateway_attached_to": "replica B only; the change is written by replica A",
        "change_poll_interval_s": POLL_INTERVAL_SECONDS,
        "samples_per_mode": samples,
    }
    try:
        asyncio.run(_run(workdir, samples, result))
    except (OSError, asyncpg.PostgresError) as error:
        result.skipped = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not usable: {error}"
    return result
