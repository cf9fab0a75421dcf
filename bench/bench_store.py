"""7. Store: the export service's JobStore API on both backends, SQLite (a file in a temporary
directory) and PostgreSQL (a database of its own on the server at ``VIDEOJOB_BENCH_POSTGRES``,
default 127.0.0.1:5432, dropped afterwards): creates per second, progress writes per second one
per call (``record_progress``) and in batches of BATCH_SIZE jobs per transaction
(``record_progress_batch``, what the export service's ProgressWriter does), and the latency of a
terminal write (``complete``) at p50 and p99."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from bench.postgres import POSTGRES_ADMIN_URL, bench_database
from bench.report import BenchResult
from bench.stats import percentile
from export_service.store import JobStore, ProgressUpdate, open_store
from videojob.render.v1 import spec_pb2

NAME = "store"
TITLE = "Store throughput and terminal write latency (SQLite, PostgreSQL)"
BATCH_SIZE = 100
CONCURRENCY = 32


async def _drive(
    count: int, concurrency: int, operation: Callable[[int], Awaitable[object]]
) -> float:
    """Runs ``operation(0..count-1)`` with ``concurrency`` callers; returns operations/s."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            await operation(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def _drive_rounds(
    jobs: int, rounds: int, concurrency: int, write: Callable[[int, int], Awaitable[object]]
) -> float:
    """``write(job, round)`` for every job and round, each job's rounds one after the other
    (two writes of one job at once could commit out of order, and the store refuses progress
    that goes back), up to ``concurrency`` jobs at once; returns writes/s."""
    callers = min(concurrency, jobs)

    async def caller(first: int) -> None:
        for job_round in range(rounds):
            for job in range(first, jobs, callers):
                await write(job, job_round)

    started = time.perf_counter()
    await asyncio.gather(*(caller(first) for first in range(callers)))
    return jobs * rounds / (time.perf_counter() - started)


async def _measure(
    store: JobStore, label: str, jobs: int, updates: int, result: BenchResult
) -> None:
    spec = spec_pb2.RenderSpec(
        source=spec_pb2.Source(test_pattern=spec_pb2.TestPattern(duration_seconds=2))
    ).SerializeToString()
    for concurrency in (1, CONCURRENCY):
        ids = [uuid.uuid4().hex for _ in range(jobs)]

        async def create(index: int, ids: list[str] = ids) -> object:
            return await store.create(job_id=ids[index], request_id=ids[index], spec=spec)

        rate = await _drive(jobs, concurrency, create)
        result.add(f"{label}: creates, {concurrency} caller(s)", rate, "jobs/s")

        # Rounds over every job, progress rising per round; a job's rounds in order.
        async def progress(job: int, job_round: int, ids: list[str] = ids) -> object:
            return await store.record_progress(
                ids[job],
                progress=min(2 + job_round * 0.01, 95.0),
                stage="Rendering",
                eta_seconds=1.0,
                render_seq=job_round + 1,
            )

        rate = await _drive_rounds(jobs, max(updates // jobs, 1), concurrency, progress)
        result.add(f"{label}: single progress writes, {concurrency} caller(s)", rate, "writes/s")

        latencies: list[float] = []

        async def terminal(
            index: int, ids: list[str] = ids, latencies: list[float] = latencies
        ) -> object:
            started = time.perf_counter()
            job = await store.complete(
                ids[index], output_path="/renders/out.mp4", size_bytes=1, duration_seconds=2,
                render_seq=10_000,
            )  # fmt: skip
            latencies.append((time.perf_counter() - started) * 1000)
            return job

        await _drive(jobs, concurrency, terminal)
        for name, fraction in (("p50", 0.5), ("p99", 0.99)):
            result.add(
                f"{label}: terminal write latency {name}, {concurrency} caller(s)",
                percentile(latencies, fraction),
                "ms",
            )

    batch_ids = [uuid.uuid4().hex for _ in range(BATCH_SIZE)]
    for job_id in batch_ids:
        await store.create(job_id=job_id, request_id=job_id, spec=spec)
    batches = max(updates // BATCH_SIZE, 1)
    started = time.perf_counter()
    for batch_round in range(batches):
        percent = min(2 + (batch_round + 1) * 0.01, 95.0)
        await store.record_progress_batch(
            [
                ProgressUpdate(job_id, percent, "Rendering", 1.0, batch_round + 1)
                for job_id in batch_ids
            ]
        )
    rate = batches * BATCH_SIZE / (time.perf_counter() - started)
    result.add(f"{label}: batched progress writes ({BATCH_SIZE} a batch)", rate, "writes/s")


async def _measure_both(directory: Path, jobs: int, updates: int, result: BenchResult) -> None:
    sqlite = await open_store(f"sqlite:///{directory / 'store.db'}")
    try:
        await _measure(sqlite, "SQLite", jobs, updates, result)
    finally:
        await sqlite.close()
    try:
        async with bench_database("store") as url:
            postgres = await open_store(url)
            try:
                await _measure(postgres, "PostgreSQL", jobs, updates, result)
            finally:
                await postgres.close()
    except (OSError, asyncpg.PostgresError) as error:
        result.error = f"PostgreSQL at {POSTGRES_ADMIN_URL} could not be measured: {error}"


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_size(workdir, 20, 40) if quick else run_size(workdir, 1000, 4000)


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: two rounds of progress over a few jobs, one batch."""
    return run_size(workdir, 4, 8)


def run_size(workdir: Path, jobs: int, updates: int) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    result.details = {
        "jobs": jobs,
        "updates": updates,
        "batch_size": BATCH_SIZE,
        "databases": "SQLite file, WAL; PostgreSQL (progress with synchronous_commit off)",
    }
    asyncio.run(_measure_both(workdir, jobs, updates, result))
    return result
