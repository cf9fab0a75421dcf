"""A render service that lies or goes quiet, scripted in-process on a real gRPC server: the
export service's own checks keep the record truthful and every job still ends.

(The real render service never does these things, which is why a scripted one is used here.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from tests.export.conftest import (
    FAST_TRACKER,
    StartExport,
    assert_monotonic,
    pattern_spec,
    wait_for,
    watch,
)
from tests.support.polling import wait_until
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

# A stream's script: events, None (fall silent forever) or CUT (the stream breaks: UNAVAILABLE).
CUT = "cut"
Step = render_pb2.RenderEvent | None | str
Script = Callable[[int], list[Step]]
Scripted = Callable[..., Awaitable[tuple["ScriptedRenderService", str]]]
Context = grpc.aio.ServicerContext[object, object]


def progress(seq: int, percent: float, stage: str = "Rendering") -> render_pb2.RenderEvent:
    return render_pb2.RenderEvent(
        seq=seq, progress=render_pb2.Progress(percent=percent, stage=stage)
    )


def completed(seq: int, path: str, duration: float = 2.0) -> render_pb2.RenderEvent:
    return render_pb2.RenderEvent(
        seq=seq,
        completed=render_pb2.Completed(output_path=path, size_bytes=5, duration_seconds=duration),
    )


def failed(seq: int, code: str) -> render_pb2.RenderEvent:
    return render_pb2.RenderEvent(seq=seq, failed=render_pb2.Failed(code=code, message="oops"))


@dataclass
class ScriptedRenderService(render_pb2_grpc.RenderServiceServicer):
    """Render call number n (from 1) streams ``script(n)``; None means: fall silent forever."""

    script: Script
    calls: list[str] = field(default_factory=list)
    watch_ends_at_once: bool = False
    # WatchRender call number n (from 1) streams ``watch_script(n)`` when set.
    watch_script: Script | None = None
    # What CancelRender reports as the render's last event.
    cancel_reports: render_pb2.RenderEvent | None = None

    async def _play(
        self, steps: list[Step], context: Context
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        for step in steps:
            if step is None:
                await asyncio.Event().wait()
                return
            if isinstance(step, str):
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the connection was cut")
            assert isinstance(step, render_pb2.RenderEvent)
            yield step

    async def Render(
        self, request: render_pb2.RenderRequest, context: Context
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        self.calls.append("Render")
        async for event in self._play(self.script(self.calls.count("Render")), context):
            yield event

    async def WatchRender(
        self,
        request: render_pb2.WatchRenderRequest,
        context: Context,
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        self.calls.append("WatchRender")
        if self.watch_script is not None:
            steps = self.watch_script(self.calls.count("WatchRender"))
            async for event in self._play(steps, context):
                yield event
            return
        if not self.watch_ends_at_once:
            await asyncio.Event().wait()
        nothing: list[render_pb2.RenderEvent] = []
        for event in nothing:
            yield event

    async def GetRender(
        self,
        request: render_pb2.GetRenderRequest,
        context: Context,
    ) -> render_pb2.RenderInfo:
        self.calls.append("GetRender")
        return render_pb2.RenderInfo(
            render_id=request.render_id, state=render_pb2.RENDER_STATE_RUNNING
        )

    async def CancelRender(
        self,
        request: render_pb2.CancelRenderRequest,
        context: Context,
    ) -> render_pb2.RenderInfo:
        self.calls.append("CancelRender")
        info = render_pb2.RenderInfo(render_id=request.render_id)
        if self.cancel_reports is not None:
            info.last_event.CopyFrom(self.cancel_reports)
        return info

    async def GetCapacity(
        self,
        request: render_pb2.GetCapacityRequest,
        context: Context,
    ) -> render_pb2.Capacity:
        self.calls.append("GetCapacity")
        return render_pb2.Capacity(max_concurrent=1, instance_id="scripted")

    async def CheckInputs(
        self,
        request: render_pb2.CheckInputsRequest,
        context: Context,
    ) -> render_pb2.CheckInputsResponse:
        """Every input passes: what the script's renders do with them is the test."""
        self.calls.append("CheckInputs")
        return render_pb2.CheckInputsResponse()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    servers: list[grpc.aio.Server] = []

    async def start(script: Script, **options: Any) -> tuple[ScriptedRenderService, str]:
        service = ScriptedRenderService(script, **options)
        server = grpc.aio.server()
        render_pb2_grpc.add_RenderServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return service, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)


async def removed(path: Path) -> None:
    """Waits for the failed job's clean-up to remove ``path``: the tracker removes it once the
    failure is committed, and the failure may reach a watcher first."""
    await wait_until(lambda: not path.exists(), f"{path.name} removed", within=10)


async def run_job(
    start_export: StartExport, address: str, **tracker: Any
) -> list[export_pb2.VideoJob]:
    server = await start_export(address, tracker=replace(FAST_TRACKER, **tracker))
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec(2.0)))
        updates = await watch(stub, job.id)
    assert_monotonic(updates)
    return updates


async def test_completion_naming_a_missing_file_fails_the_job(
    scripted: Scripted,
    start_export: StartExport,
    tmp_path: Path,
) -> None:
    _, address = await scripted(
        lambda _: [progress(1, 50), completed(2, str(tmp_path / "never-written.mp4"))]
    )
    final = (await run_job(start_export, address, output_wait=0.5))[-1]
    assert final.status == export_pb2.FAILED
    assert final.error.code == "VERIFICATION_FAILED"
    assert "never-written.mp4" in final.error.message and "does not exist" in final.error.message
    assert final.output_path == "" and final.progress == 50


async def test_completion_of_the_wrong_duration_fails_the_job(
    scripted: Scripted,
    start_export: StartExport,
    tmp_path: Path,
) -> None:
    output = tmp_path / "short.mp4"
    output.write_bytes(b"not much")
    _, address = await scripted(lambda _: [completed(1, str(output), duration=1.0)])
    final = (await run_job(start_export, address))[-1]
    assert (final.status, final.error.code) == (export_pb2.FAILED, "VERIFICATION_FAILED")
    await removed(output)  # a failed job leaves no file behind


async def test_late_events_replays_and_100_percent_progress_cannot_lie(
    scripted: Scripted,
    start_export: StartExport,
    tmp_path: Path,
) -> None:
    output = tmp_path / "ok.mp4"
    output.write_bytes(b"video")
    _, address = await scripted(
        lambda _: [
            progress(1, 40),
            progress(2, 30),  # backwards
            progress(2, 80),  # a replayed seq
            progress(3, 100),  # 100 before completion
            completed(4, str(output)),
            progress(5, 10),  # after the terminal event
            failed(6, "FFMPEG_ERROR"),
        ]
    )
    server = await start_export(address, tracker=replace(FAST_TRACKER, progress_interval=0.0))
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec(2.0)))
        updates = await watch(stub, job.id)
        history = await stub.ListJobHistory(export_pb2.ListJobHistoryRequest(id=job.id))
    assert_monotonic(updates)
    final = updates[-1]
    assert final.status == export_pb2.COMPLETED and final.output_path == str(output)
    # Every version the store held, not only those a watcher happened to see.
    statuses = [entry.status for entry in history.entries]
    assert statuses[-1] == export_pb2.COMPLETED and statuses.count(export_pb2.COMPLETED) == 1
    assert max(entry.progress for entry in history.entries[:-1]) < 100
    assert 80 not in [entry.progress for entry in history.entries]


async def test_shutdown_verdict_is_retried_as_a_lost_render(
    scripted: Scripted,
    start_export: StartExport,
    tmp_path: Path,
) -> None:
    output = tmp_path / "ok.mp4"
    output.write_bytes(b"video")
    service, address = await scripted(
        lambda call: (
            [progress(1, 60), failed(2, "SHUTDOWN")]
            if call == 1
            else [progress(1, 20), progress(2, 70), completed(3, str(output))]
        )
    )
    final = (await run_job(start_export, address))[-1]
    assert (final.status, final.attempt) == (export_pb2.COMPLETED, 2)
    assert service.calls.count("Render") == 2


async def test_a_render_verdict_is_not_retried(
    scripted: Scripted, start_export: StartExport
) -> None:
    service, address = await scripted(lambda _: [progress(1, 10), failed(2, "FFMPEG_ERROR")])
    final = (await run_job(start_export, address))[-1]
    assert (final.status, final.error.code, final.attempt) == (export_pb2.FAILED, "FFMPEG_ERROR", 1)
    assert service.calls.count("Render") == 1


async def test_a_render_that_falls_silent_for_good_fails_in_bounded_time(
    scripted: Scripted, start_export: StartExport
) -> None:
    service, address = await scripted(lambda _: [progress(1, 30), None])
    final = (await run_job(start_export, address, stall_timeout=0.5))[-1]
    assert (final.status, final.error.code) == (export_pb2.FAILED, "RENDER_STALLED")
    assert final.progress == 30
    assert service.calls.count("WatchRender") >= 1

    async def render_cancelled() -> bool:
        return "CancelRender" in service.calls

    await wait_for(render_cancelled, within=10)


async def test_streams_that_end_at_once_without_a_verdict_fail_in_bounded_time(
    scripted: Scripted, start_export: StartExport
) -> None:
    service, address = await scripted(lambda _: [progress(1, 30)], watch_ends_at_once=True)
    final = (await run_job(start_export, address))[-1]
    assert (final.status, final.error.code) == (export_pb2.FAILED, "RENDER_STALLED")
    assert service.calls.count("WatchRender") == FAST_TRACKER.max_quiet_rounds


async def test_completion_while_the_output_directory_is_away_is_rechecked(
    scripted: Scripted, start_export: StartExport, tmp_path: Path
) -> None:
    """The chaos fault: the output directory renamed away and a regular file at its path
    (ENOTDIR) just when the render reports completion; the file is there a moment later."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "job.mp4"
    output.write_bytes(b"video")
    away = tmp_path / "out.away"
    out_dir.rename(away)
    out_dir.write_bytes(b"in the way")

    async def bring_back() -> None:
        await asyncio.sleep(1.0)
        out_dir.unlink()
        away.rename(out_dir)

    _, address = await scripted(lambda _: [progress(1, 90), completed(2, str(output))])
    restore = asyncio.create_task(bring_back())
    try:
        final = (await run_job(start_export, address, output_wait=30.0))[-1]
    finally:
        await restore
    assert (final.status, final.output_path, final.progress) == (
        export_pb2.COMPLETED,
        str(output),
        100,
    )


async def test_completion_naming_a_file_of_the_wrong_size_fails_and_removes_it(
    scripted: Scripted, start_export: StartExport, tmp_path: Path
) -> None:
    output = tmp_path / "truncated.mp4"
    output.write_bytes(b"vid")  # the render reported 5 bytes
    _, address = await scripted(lambda _: [completed(1, str(output))])
    final = (await run_job(start_export, address, output_wait=60.0))[-1]
    assert (final.status, final.error.code) == (export_pb2.FAILED, "VERIFICATION_FAILED")
    assert "3 bytes" in final.error.message
    await removed(output)


async def test_re_attaching_after_stream_cuts_costs_no_attempt(
    scripted: Scripted, start_export: StartExport, tmp_path: Path
) -> None:
    """More cut streams than max_attempts while the render service still knows the render:
    every one is a re-attach, none a resubmission, and the job completes."""
    output = tmp_path / "ok.mp4"
    output.write_bytes(b"video")
    cuts = 6
    service, address = await scripted(
        lambda _: [progress(1, 10), CUT],
        watch_script=lambda call: (
            [progress(call + 1, 10 + call), CUT]
            if call < cuts
            else [progress(call + 1, 90), completed(call + 2, str(output))]
        ),
    )
    final = (await run_job(start_export, address, max_attempts=2, backoff_max=0.3))[-1]
    assert (final.status, final.attempt) == (export_pb2.COMPLETED, 1)
    assert service.calls.count("Render") == 1 and service.calls.count("WatchRender") == cuts


async def test_giving_up_on_a_lost_render_cancels_it_and_removes_its_output(
    scripted: Scripted, start_export: StartExport, tmp_path: Path
) -> None:
    """The render service keeps losing the render (SHUTDOWN) until the attempts are used up;
    meanwhile a render it finished left a file: the failed job must not keep it."""
    leftover = tmp_path / "leftover.mp4"
    leftover.write_bytes(b"video")
    service, address = await scripted(
        lambda _: [progress(1, 20), failed(2, "SHUTDOWN")],
        cancel_reports=completed(3, str(leftover)),
    )
    server = await start_export(address, tracker=replace(FAST_TRACKER, max_attempts=2))
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec(2.0)))
        final = (await watch(stub, job.id))[-1]
    assert (final.status, final.error.code, final.attempt) == (
        export_pb2.FAILED,
        "RENDER_LOST",
        2,
    )
    assert "gave up after 2 attempts" in final.error.message
    assert service.calls.count("Render") == 2

    async def released() -> bool:
        return not leftover.exists() and "CancelRender" in service.calls

    await wait_for(released, within=10)
