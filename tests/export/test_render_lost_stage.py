"""A job whose render service stops answering says so, as real processes (render service,
export service, gateway; renders at playback speed): while its tracker keeps asking, the job
reads "Waiting for a render service" with its progress kept and no ETA, and says it is retrying,
over gRPC, HTTP and SSE alike; once the render service answers again and events flow, the stage
is the render's again and the job ends truthfully.

- SIGKILL of the only render service mid-render, then a new one on the same port: the render is
  lost with it, so the job goes on as attempt 2 and completes;
- SIGSTOP of the render service, then SIGCONT: the same render answers again, the tracker
  re-attaches and its stage (Rendering) is back, attempt 1.

Every wait is on observed state (the job as the gateway and the export service report it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.async_sse import StreamRecord, read_stream
from tests.gateway.conftest import GATEWAY_TEST_ARGS, TERMINAL, tiny_spec
from tests.gateway.realtime_stack import write_realtime_ffmpeg
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.limits import STAGE_WAITING_FOR_RENDER
from videojob_launcher import Role, Stack, StackConfig

EXPORT_ARGS = ("--stall-timeout", "2", "--backoff-initial", "0.3", "--backoff-max", "1")
POLL_SECONDS = 0.1


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    config = StackConfig(
        tmp_path,
        render=Role(env={"FFMPEG_BINARY": str(write_realtime_ffmpeg(tmp_path))}),
        export=Role(args=EXPORT_ARGS),
        gateway=Role(args=GATEWAY_TEST_ARGS),
    )
    async with Stack(config) as running:
        yield running


async def job_until(
    http: httpx.AsyncClient, job_id: str, wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """GET /api/jobs/{id} until the job is as wanted (bounded by the suite's test timeout)."""
    while True:
        response = await http.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if wanted(job):
            return job
        assert job["status"] not in TERMINAL, job
        await asyncio.sleep(POLL_SECONDS)


def rendering(job: dict[str, Any]) -> bool:
    return bool(job["stage"] == "Rendering" and job["progress"] >= 10)


def waiting(job: dict[str, Any]) -> bool:
    return bool(job["stage"] == STAGE_WAITING_FOR_RENDER)


async def assert_shown_as_waiting(
    http: httpx.AsyncClient, stub: export_pb2_grpc.ExportServiceAsyncStub, before: dict[str, Any]
) -> dict[str, Any]:
    """The job reads "Waiting for a render service" over HTTP and gRPC, with its progress kept,
    no ETA, retrying, on its first attempt still."""
    job = await job_until(http, before["id"], waiting)
    assert job["status"] == "running" and job["attempt"] == 1, job
    assert job["progress"] >= before["progress"] and job["etaSeconds"] is None, job
    assert job["retrying"] is True, job
    shown = await stub.GetExport(export_pb2.GetExportRequest(id=before["id"]), timeout=10)
    assert (shown.stage, shown.eta_seconds, shown.retrying) == (STAGE_WAITING_FOR_RENDER, 0, True)
    return job


def assert_seen_on_the_event_stream(record: StreamRecord, final: dict[str, Any]) -> list[str]:
    """The job's SSE stream showed the wait and then a stage the render reported, in rising
    versions with progress that never fell, up to the terminal event; its stages in order."""
    jobs = [event.job for event in record.events]
    versions = [job["version"] for job in jobs]
    assert versions == sorted(set(versions)), versions
    progress = [job["progress"] for job in jobs]
    assert progress == sorted(progress), progress
    stages = [job["stage"] for job in jobs]
    assert STAGE_WAITING_FOR_RENDER in stages, stages
    after = stages[stages.index(STAGE_WAITING_FOR_RENDER) + 1 :]
    assert any(stage in ("Preparing", "Rendering", "Finalizing") for stage in after), stages
    assert record.terminal is not None and record.terminal.id == final["version"]
    waits = [job for job in jobs if job["stage"] == STAGE_WAITING_FOR_RENDER]
    assert all(job["etaSeconds"] is None and job["retrying"] for job in waits), waits
    return stages


@contextlib.asynccontextmanager
async def followed_job(
    stack: Stack, duration: float
) -> AsyncIterator[
    tuple[httpx.AsyncClient, export_pb2_grpc.ExportServiceAsyncStub, dict[str, Any], StreamRecord]
]:
    """A job created over HTTP and followed on its SSE stream until the stream ends."""
    async with (
        httpx.AsyncClient(base_url=stack.url, timeout=30) as http,
        create_channel(stack.export_addr) as channel,
    ):
        created = await http.post("/api/jobs", json=tiny_spec(duration))
        assert created.status_code == 201, created.text
        job = created.json()
        record = StreamRecord()
        stream = asyncio.create_task(read_stream(http, job["id"], record))
        try:
            yield http, export_pb2_grpc.ExportServiceStub(channel), job, record
            await stream
        finally:
            stream.cancel()


async def test_a_killed_render_service_is_waited_for_then_the_job_goes_on(stack: Stack) -> None:
    async with followed_job(stack, 6.0) as (http, stub, job, record):
        before = await job_until(http, job["id"], rendering)
        with contextlib.suppress(ProcessLookupError):  # the service and its ffmpeg
            os.killpg(stack.render.pid, signal.SIGKILL)
        await asyncio.to_thread(stack.render.kill)
        await assert_shown_as_waiting(http, stub, before)
        await asyncio.to_thread(stack.render.start)  # on the same port, without the render
        final = await job_until(http, job["id"], lambda j: j["status"] in TERMINAL)
    assert final["status"] == "completed" and final["attempt"] == 2, final
    assert final["retrying"] is False and final["stage"] == "Complete"
    assert_seen_on_the_event_stream(record, final)


async def test_a_paused_render_service_is_waited_for_then_its_render_goes_on(
    stack: Stack,
) -> None:
    async with followed_job(stack, 20.0) as (http, stub, job, record):
        before = await job_until(http, job["id"], rendering)
        stack.render.pause()
        try:
            await assert_shown_as_waiting(http, stub, before)
        finally:
            stack.render.resume()
        # The same render answers again: its own stage is back, on the same attempt.
        back = await job_until(http, job["id"], lambda j: not waiting(j))
        assert back["status"] == "running" and back["attempt"] == 1, back
        assert back["stage"] in ("Rendering", "Finalizing") and back["retrying"] is False, back
        final = await job_until(http, job["id"], lambda j: j["status"] in TERMINAL)
    assert final["status"] == "completed" and final["attempt"] == 1, final
    stages = assert_seen_on_the_event_stream(record, final)
    assert "Preparing" not in stages[stages.index(STAGE_WAITING_FOR_RENDER) :], stages
