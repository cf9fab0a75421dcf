"""Cancel racing the render at random moments, including right when completion arrives:
exactly one terminal state, and every watcher sees the same one."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from export_service.server import ExportServer
from tests.export.conftest import (
    assert_completed_with_valid_file,
    assert_monotonic,
    pattern_spec,
    wait_for,
    watch,
)
from videojob.export.v1 import export_pb2

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

ROUNDS = 16


async def race_once(stub: Stub, delay: float) -> tuple[str, export_pb2.VideoJob]:
    job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec(1.0)))
    watchers = [asyncio.create_task(watch(stub, job.id)) for _ in range(2)]
    await asyncio.sleep(delay)
    try:
        answer = await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
        outcome = "cancelled"
        assert answer.status == export_pb2.CANCELLED
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
        outcome = "too late"
    views = await asyncio.gather(*watchers)
    final = await stub.GetExport(export_pb2.GetExportRequest(id=job.id))
    for updates in views:
        assert_monotonic(updates)
        assert updates[-1] == final
    if outcome == "cancelled":
        assert final.status == export_pb2.CANCELLED and final.output_path == ""
    else:
        assert final.status in (export_pb2.COMPLETED, export_pb2.FAILED)
    return outcome, final


async def test_cancel_races_end_in_exactly_one_terminal_state(
    stub: Stub, export_server: ExportServer, tmp_path: Path
) -> None:
    started = time.monotonic()
    job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec(1.0)))
    assert_completed_with_valid_file((await watch(stub, job.id))[-1], 1.0)
    typical = time.monotonic() - started
    rng = random.Random(20240611)
    delays = [rng.uniform(0, typical * 1.3) for _ in range(ROUNDS)]
    delays[:4] = [0.0, typical * 0.9, typical, typical * 1.05]
    results = []
    for batch in range(0, ROUNDS, 4):
        results += await asyncio.gather(*(race_once(stub, d) for d in delays[batch : batch + 4]))
    outputs = tmp_path / "out"

    async def cancelled_outputs_gone() -> bool:
        names = {path.stem for path in outputs.iterdir()}
        return not any(final.id in names for outcome, final in results if outcome == "cancelled")

    await wait_for(cancelled_outputs_gone, within=15)
    completed = [final for _, final in results if final.status == export_pb2.COMPLETED]
    assert all(output_exists(final) for final in completed)
    assert "cancelled" in {outcome for outcome, _ in results}


def output_exists(job: export_pb2.VideoJob) -> bool:
    return Path(job.output_path).is_file()
