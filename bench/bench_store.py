"""7. Store: CreateExport and progress-update throughput on SQLite, through the export
service's JobStore API against a file in a temporary directory. Progress is measured one update
per call (``record_progress``) and in batches of BATCH_SIZE jobs per transaction
(``record_progress_batch``, what the export service's ProgressWriter does)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.report import BenchResult
from export_service.store import ProgressUpdate, open_store
from videojob.render.v1 import spec_pb2

NAME = "store"
TITLE = "Store throughput (SQLite)"
BATCH_SIZE = 100


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


async def _measure(directory: Path, jobs: int, updates: int, result: BenchResult) -> None:
    spec = spec_pb2.RenderSpec(
        source=spec_pb2.Source(test_pattern=spec_pb2.TestPattern(duration_seconds=2))
    ).SerializeToString()
    store = await open_store(f"sqlite:///{directory / 'store.db'}")
    try:
        for concurrency in (1, 32):
            ids = [uuid.uuid4().hex for _ in range(jobs)]

            async def create(index: int, ids: list[str] = ids) -> object:
                return await store.create(job_id=ids[index], request_id=ids[index], spec=spec)

            rate = await _drive(jobs, concurrency, create)
            result.add(f"CreateExport, {concurrency} caller(s)", rate, "jobs/s")

            # Each update goes to the next job in turn, with progress rising per round.
            async def progress(index: int, ids: list[str] = ids) -> object:
                job_round, job = divmod(index, len(ids))
                return await store.record_progress(
                    ids[job],
                    progress=min(2 + job_round * 0.01, 95.0),
                    stage="Rendering",
                    eta_seconds=1.0,
                    render_seq=job_round + 1,
                )

            rate = await _drive(updates, concurrency, progress)
            result.add(f"progress update, {concurrency} caller(s)", rate, "writes/s")

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
        result.add(f"progress update, batches of {BATCH_SIZE}", rate, "writes/s")
    finally:
        await store.close()


def run(workdir: Path, quick: bool) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    jobs, updates = (20, 40) if quick else (1000, 4000)
    result.details = {
        "jobs": jobs,
        "updates": updates,
        "batch_size": BATCH_SIZE,
        "database": "SQLite file, WAL",
    }
    asyncio.run(_measure(workdir, jobs, updates, result))
    return result
