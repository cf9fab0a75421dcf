"""6. Tracking scale: the export service (a real process) tracking many concurrent renders
from bench's synthetic render server (the real RenderService protocol, progress at 10 Hz):
CPU per job, store writes per second, peak RSS, and that every job reached a terminal state.

Progress is watched by reading the SQLite file read-only from this process, so the
measurement adds no load to the export service."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from bench import procfs
from bench.report import BenchResult
from bench.stack import running_stack
from bench.stats import percentile
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.render.v1 import spec_pb2

NAME = "tracking"
TITLE = "Export service tracking concurrent renders"
SAMPLE_SECONDS = 0.5
CREATE_CONCURRENCY = 50


def _snapshot(database: Path) -> tuple[dict[str, int], int]:
    """Jobs per status and the sum of versions (every job's number of changes)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        versions = conn.execute("SELECT coalesce(sum(version), 0) FROM jobs").fetchone()[0]
    conn.close()
    return counts, int(versions)


async def _create(address: str, jobs: int, duration: float) -> list[str]:
    spec = spec_pb2.RenderSpec(
        source=spec_pb2.Source(
            test_pattern=spec_pb2.TestPattern(
                duration_seconds=duration, width=1280, height=720, fps=30
            )
        ),
        output=spec_pb2.OutputSpec(container="mp4"),
    )
    ids: list[str] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        remaining = iter(range(jobs))

        async def worker() -> None:
            for _ in remaining:
                request = export_pb2.CreateExportRequest(request_id=uuid.uuid4().hex, spec=spec)
                ids.append((await stub.CreateExport(request, timeout=60)).id)

        await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
    return ids


def _wait_terminal(database: Path, jobs: int, deadline: float) -> list[tuple[float, int, int]]:
    """Samples (time, terminal jobs, summed versions) until all are terminal or the deadline."""
    samples: list[tuple[float, int, int]] = []
    while True:
        counts, versions = _snapshot(database)
        terminal = sum(counts.get(s, 0) for s in ("COMPLETED", "FAILED", "CANCELLED"))
        samples.append((time.monotonic(), terminal, versions))
        if terminal >= jobs or time.monotonic() > deadline:
            return samples
        time.sleep(SAMPLE_SECONDS)


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_jobs(workdir, 20, 2.0) if quick else run_jobs(workdir, 1000, 10.0)


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: a few short jobs."""
    return run_jobs(workdir, 4, 1.0)


def run_jobs(workdir: Path, jobs: int, duration: float) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    with running_stack(workdir, synthetic=True, with_gateway=False) as stack:
        database = stack.config.sqlite_path
        assert database is not None, "the tracking benchmark reads the SQLite store"
        pid = stack.export.pid
        cpu_before = procfs.cpu_seconds(pid)
        render_cpu_before = procfs.cpu_seconds(stack.render.pid)
        started = time.monotonic()
        asyncio.run(_create(stack.export.address, jobs, duration))
        created = time.monotonic()
        samples = _wait_terminal(database, jobs, started + duration + 300)
        finished = samples[-1][0]
        cpu = procfs.cpu_seconds(pid) - cpu_before
        render_cpu = procfs.cpu_seconds(stack.render.pid) - render_cpu_before
        peak = procfs.peak_rss_mib(pid)
        counts, versions = _snapshot(database)
    elapsed = finished - started
    rates = [
        (later[2] - earlier[2]) / (later[0] - earlier[0])
        for earlier, later in itertools.pairwise(samples)
        if later[0] > earlier[0]
    ]
    terminal = sum(counts.get(s, 0) for s in ("COMPLETED", "FAILED", "CANCELLED"))
    result.add("jobs", jobs, "jobs")
    result.add("CPU per job", cpu / jobs * 1000, "ms")
    result.add("export service CPU, mean", cpu / elapsed * 100, "% of a core")
    result.add("store writes, mean", versions / elapsed, "writes/s")
    result.add("store writes, p99 of 0.5 s windows", percentile(rates, 0.99), "writes/s")
    result.add("export service peak RSS", peak, "MiB")
    result.add("store writes per job", versions / jobs, "writes")
    result.add("seconds from first create to all terminal", elapsed, "s")
    result.add("tracking lag behind the renders", elapsed - duration, "s")
    result.add("jobs recorded terminal", terminal, "jobs")
    details: dict[str, Any] = {
        "jobs": jobs,
        "render_seconds": duration,
        "progress_rate_hz": 10,
        "create_seconds": created - started,
        "statuses": counts,
        "all_terminal": terminal == jobs,
        "all_completed": counts.get("COMPLETED", 0) == jobs,
        "versions_written": versions,
        "synthetic_render_cpu_seconds": render_cpu,
    }
    result.details = details
    return result
