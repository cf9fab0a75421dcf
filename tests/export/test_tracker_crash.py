"""A tracker that crashes (a bug, or a fault no rule foresaw) never fails a job on its own: it is
tracked again from its record, a bounded number of times; while the service stops, a crash is a
handover. The crash is injected into the real store (SQLite) under a real export server and a
real render service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from export_service.server import ExportServer
from export_service.store import Job, JobStatus, open_store
from tests.export.conftest import (
    FAST_TRACKER,
    InProcessRender,
    StartExport,
    assert_completed_with_valid_file,
    pattern_spec,
    wait_for,
    watch,
)
from videojob import metrics
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.limits import FAILURE_INTERNAL


class InjectedFault(RuntimeError):
    """Stands for a bug in tracking code."""


def crashes(outcome: str) -> float:
    value = metrics.EXPORT.get_sample_value("videojob_tracker_crashes_total", {"outcome": outcome})
    return value or 0.0


def crash_completions(
    server: ExportServer, times: int, before_raising: Callable[[], Awaitable[None]] | None = None
) -> list[str]:
    """The store's completion raises InjectedFault the first ``times`` calls (after
    ``before_raising``), then works; returns the list of the calls' job ids."""
    store = server.store
    complete = store.complete
    calls: list[str] = []

    async def faulty(job_id: str, **kwargs: Any) -> Job:
        calls.append(job_id)
        if len(calls) <= times:
            if before_raising is not None:
                await before_raising()
            raise InjectedFault(f"injected fault {len(calls)}")
        return await complete(job_id, **kwargs)

    store.complete = faulty  # type: ignore[method-assign]
    return calls


async def create(
    server: ExportServer, duration: float = 1.0
) -> tuple[str, list[export_pb2.VideoJob]]:
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        spec = pattern_spec(duration)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec))
        return job.id, await watch(stub, job.id)


async def test_a_tracker_that_crashes_once_is_tracked_again_and_the_job_completes(
    start_export: StartExport, render_service: InProcessRender
) -> None:
    server = await start_export(render_service.address)
    calls = crash_completions(server, times=1)
    retracked = crashes("retracked")
    job_id, updates = await create(server)
    assert_completed_with_valid_file(updates[-1], 1.0)
    assert len(calls) == 2  # the crashed completion, then the successor's
    assert crashes("retracked") == retracked + 1
    history = await server.store.history(job_id)
    assert [entry.status for entry in history].count(JobStatus.COMPLETED) == 1
    assert JobStatus.FAILED not in {entry.status for entry in history}


async def test_a_tracker_that_keeps_crashing_fails_its_job_internal(
    start_export: StartExport, render_service: InProcessRender
) -> None:
    server = await start_export(
        render_service.address, tracker=replace(FAST_TRACKER, max_tracker_restarts=2)
    )
    calls = crash_completions(server, times=1000)
    failed = crashes("failed")
    _, updates = await create(server)
    final = updates[-1]
    assert final.status == export_pb2.FAILED, final
    assert final.error.code == FAILURE_INTERNAL
    assert "injected fault 3" in final.error.message
    assert len(calls) == 3  # the first tracker and its two successors
    assert crashes("failed") == failed + 1


async def test_a_crash_while_the_service_stops_is_a_handover(
    start_export: StartExport, render_service: InProcessRender, tmp_path: Path
) -> None:
    server = await start_export(render_service.address)

    async def stopping() -> bool:
        return server.supervisor.stopping

    async def until_stopping() -> None:
        await wait_for(stopping)

    calls = crash_completions(server, times=1, before_raising=until_stopping)
    handed_over = crashes("handed_over")
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec(1.0)))

    async def completing() -> bool:
        return bool(calls)

    await wait_for(completing)
    await server.stop(0)
    assert crashes("handed_over") == handed_over + 1
    store = await open_store(f"sqlite:///{tmp_path / 'export.db'}")
    try:
        recorded = await store.get(job.id)
    finally:
        await store.close()
    assert recorded.status is JobStatus.RUNNING, recorded  # for the next start to finish


async def test_with_no_restarts_allowed_the_first_crash_fails_the_job(
    start_export: StartExport, render_service: InProcessRender
) -> None:
    server = await start_export(
        render_service.address, tracker=replace(FAST_TRACKER, max_tracker_restarts=0)
    )
    calls = crash_completions(server, times=1)
    _, updates = await create(server)
    assert updates[-1].status == export_pb2.FAILED
    assert updates[-1].error.code == FAILURE_INTERNAL
    assert len(calls) == 1
