"""Tracking concurrent renders on PostgreSQL against SQLite (bench_tracking's load: jobs on
bench's synthetic render server, progress at 10 Hz, all created at once), and whether any job
changes owner while nothing fails.

Three runs on the same load: one export service on SQLite, one on PostgreSQL, three replicas on
PostgreSQL (jobs created round-robin through them, so each replica owns a third). The smoke form
runs SQLite and two replicas on PostgreSQL: every path of the three, in two runs. Reported per
run: the export services' CPU per job; on PostgreSQL also the CPU of the database server's
processes serving their connections (SQLite's work is inside the export service), and the owner
changes: every claim raises a job's lease epoch from the 1 it was created with, so the changes
are the sum of (epoch - 1) over the jobs. Nothing is killed or paused: any change is a lease
that a busy replica lost."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from bench import procfs
from bench.postgres import (
    POSTGRES_ADMIN_URL,
    TERMINAL,
    backend_cpu_seconds,
    bench_database,
    terminal_jobs,
)
from bench.report import BenchResult
from bench.stack import SYNTHETIC_RENDER_MODULE
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.render.v1 import spec_pb2
from videojob_launcher import Role, Stack, StackConfig

NAME = "tracking_replicas"
TITLE = "Tracking concurrent renders: CPU per job on PostgreSQL against SQLite; owner changes"
SAMPLE_SECONDS = 0.5
CREATE_CONCURRENCY = 30
Runs = tuple[tuple[str, int], ...]  # (database kind, export replicas) per run
RUNS: Runs = (("sqlite", 1), ("postgresql", 1), ("postgresql", 3))
SMOKE_RUNS: Runs = (("sqlite", 1), ("postgresql", 2))


def _spec(duration: float) -> spec_pb2.RenderSpec:
    return spec_pb2.RenderSpec(
        source=spec_pb2.Source(
            test_pattern=spec_pb2.TestPattern(
                duration_seconds=duration, width=1280, height=720, fps=30
            )
        ),
        output=spec_pb2.OutputSpec(container="mp4"),
    )


async def _create(addresses: list[str], jobs: int, duration: float) -> None:
    """``jobs`` jobs, the n-th through replica n modulo their number."""
    channels = [grpc.aio.insecure_channel(address) for address in addresses]
    try:
        stubs = [export_pb2_grpc.ExportServiceStub(channel) for channel in channels]
        remaining = iter(range(jobs))

        async def worker() -> None:
            for index in remaining:
                request = export_pb2.CreateExportRequest(
                    request_id=uuid.uuid4().hex, spec=_spec(duration)
                )
                await stubs[index % len(stubs)].CreateExport(request, timeout=60)

        await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
    finally:
        for channel in channels:
            await channel.close(None)


def _sqlite_terminal(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        marks = ",".join("?" * len(TERMINAL))
        row = conn.execute(f"SELECT count(*) FROM jobs WHERE status IN ({marks})", TERMINAL)
        count = int(row.fetchone()[0])
    conn.close()
    return count


def _stack(workdir: Path, database: str, replicas: int, duration: float) -> Stack:
    config = StackConfig(
        workdir,
        database=database,
        output_dir=workdir / "output",
        render=Role(module=SYNTHETIC_RENDER_MODULE, args=("--duration", str(duration))),
        export=Role(count=replicas),
        gateway=Role(count=0),
        stop_grace=10.0,
    )
    return Stack(config).start()


async def _track(
    workdir: Path, database: str, replicas: int, jobs: int, duration: float
) -> dict[str, Any]:
    stack = await asyncio.to_thread(_stack, workdir, database, replicas, duration)
    conn: asyncpg.Connection[Any] | None = None
    try:
        sqlite_path = stack.config.sqlite_path
        if sqlite_path is None:
            conn = await asyncpg.connect(database)
            backend_before = await backend_cpu_seconds(conn)
        pids = [process.pid for process in stack.exports]
        cpu_before = sum(procfs.cpu_seconds(pid) for pid in pids)
        started = time.monotonic()
        await _create([process.address for process in stack.exports], jobs, duration)
        deadline = started + duration + 300
        while True:
            if conn is not None:
                terminal = await terminal_jobs(conn)
            else:
                assert sqlite_path is not None
                terminal = await asyncio.to_thread(_sqlite_terminal, sqlite_path)
            if terminal >= jobs or time.monotonic() > deadline:
                break
            await asyncio.sleep(SAMPLE_SECONDS)
        elapsed = time.monotonic() - started
        cpu = sum(procfs.cpu_seconds(pid) for pid in pids) - cpu_before
        run: dict[str, Any] = {
            "replicas": replicas,
            "terminal": terminal,
            "seconds": round(elapsed, 2),
            "export_cpu_per_job_ms": cpu / jobs * 1000,
        }
        if conn is not None:
            backend_after = await backend_cpu_seconds(conn)
            if backend_before is not None and backend_after is not None:
                run["database_cpu_per_job_ms"] = (backend_after - backend_before) / jobs * 1000
            run["owner_changes"] = int(
                await conn.fetchval("SELECT coalesce(sum(lease_epoch - 1), 0)::bigint FROM jobs")
            )
            run["statuses"] = dict(
                await conn.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
            )
        return run
    finally:
        if conn is not None:
            await conn.close()
        await asyncio.to_thread(stack.stop)


async def _run(workdir: Path, runs: Runs, jobs: int, duration: float, result: BenchResult) -> None:
    for kind, replicas in runs:
        label = f"{kind}, {replicas} replica{'s' if replicas > 1 else ''}"
        where = workdir / f"{kind}-{replicas}"
        if kind == "sqlite":
            run = await _track(where, "", replicas, jobs, duration)
        else:
            async with bench_database("tracking") as database:
                run = await _track(where, database, replicas, jobs, duration)
        result.details[label] = run
        result.add(f"{label}: export CPU per job", run["export_cpu_per_job_ms"], "ms")
        if kind == "postgresql":
            result.add(
                f"{label}: database server CPU per job", run.get("database_cpu_per_job_ms"), "ms"
            )
            result.add(f"{label}: owner changes without a fault", run["owner_changes"], "jobs")
        result.add(f"{label}: jobs terminal", run["terminal"], "jobs")


def _measure(workdir: Path, runs: Runs, jobs: int, duration: float) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    result.details["setup"] = {"jobs": jobs, "render_seconds": duration, "progress_rate_hz": 10}
    try:
        asyncio.run(_run(workdir, runs, jobs, duration, result))
    except (OSError, asyncpg.PostgresError) as error:
        result.skipped = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not usable: {error}"
    return result


def run(workdir: Path, quick: bool) -> BenchResult:
    return _measure(workdir, RUNS, *((60, 5.0) if quick else (1000, 10.0)))


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: one short job per replica in each run."""
    return _measure(workdir, SMOKE_RUNS, 2, 1.0)
