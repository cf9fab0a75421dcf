"""Things break in the middle of a render; every job still ends, and ends truthfully."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from export_service.config import TrackerSettings
from export_service.server import ExportServer
from export_service.store import JobStatus, open_store
from tests.export.conftest import (
    FAST_TRACKER,
    InProcessRender,
    RenderProcesses,
    StartExport,
    assert_completed_with_valid_file,
    assert_monotonic,
    kill_group,
    slow_spec,
    stop_processes,
    wait_for,
    watch,
)
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess, gone, start_service
from tests.support.tcp_proxy import TcpProxy
from tests.support.throttle import Throttle
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub as RenderStub

SLOW_DURATION = slow_spec().source.test_pattern.duration_seconds


async def watch_until(
    stub: Stub,
    job_id: str,
    reached: float,
    *,
    stream: grpc.aio.UnaryStreamCall[object, export_pb2.VideoJob] | None = None,
) -> tuple[list[export_pb2.VideoJob], grpc.aio.UnaryStreamCall[object, export_pb2.VideoJob]]:
    """Reads updates (of ``stream``, or a new watch) until progress reaches ``reached``;
    returns them and the open stream."""
    if stream is None:
        request = export_pb2.WatchExportRequest(id=job_id)
        stream = stub.WatchExport(request, timeout=90)  # type: ignore[assignment]
    assert stream is not None
    seen: list[export_pb2.VideoJob] = []
    while not seen or seen[-1].progress < reached:
        update = await stream.read()
        assert isinstance(update, export_pb2.VideoJob), seen
        assert update.status not in (export_pb2.COMPLETED, export_pb2.FAILED), update
        seen.append(update)
    return seen, stream


async def read_rest(
    stream: grpc.aio.UnaryStreamCall[object, export_pb2.VideoJob],
) -> list[export_pb2.VideoJob]:
    rest = []
    while isinstance(update := await stream.read(), export_pb2.VideoJob):
        rest.append(update)
    return rest


class RanPastTheHold(Exception):
    """The render got past the point where it was to be held: on a loaded machine the throttle's
    thread can wake late and let ffmpeg run on, past 80 % or to its end, between two reports."""


async def freeze_near_the_end(
    render_stub: RenderStub, render_id: str, throttle: Throttle
) -> render_pb2.Progress:
    """Follows the render on the render service itself while ``throttle`` slows its ffmpeg
    (3x, 9x from 20 %, 21x from 50 %, so that its reports, every 0.5 s, come in steps of a few
    percent near the end even where it runs 50x faster than real time) and freezes it at the
    first report of 80 % or more, which it returns. RanPastTheHold when that report is not of
    Rendering, or no ffmpeg was left to freeze (it ended after its last report)."""
    call = render_stub.WatchRender(render_pb2.WatchRenderRequest(render_id=render_id), timeout=90)
    reports: list[str] = []
    try:
        async for event in call:
            assert event.WhichOneof("event") == "progress", event
            reports.append(f"{event.progress.percent:.1f} {event.progress.stage}")
            if event.progress.percent >= 80:
                held = throttle.freeze()
                if event.progress.stage != "Rendering" or all(gone(pid) for pid in held):
                    raise RanPastTheHold(", ".join(reports))
                return event.progress
            percent = event.progress.percent
            throttle.pause = 0.5 if percent >= 50 else 0.2 if percent >= 20 else 0.05
    finally:
        call.cancel()
    raise AssertionError("the render's stream ended before 80 %")


# Renders started until one is held near its end (each try that ran past ends first).
HOLD_TRIES = 3


@dataclass
class HeldRender:
    """An export whose ffmpeg is frozen at 80-odd percent, which the job already shows; the
    tracker reaches the render service through ``proxy``, the test directly."""

    server: ExportServer
    stub: Stub
    render_stub: RenderStub
    proxy: TcpProxy
    throttle: Throttle
    job_id: str
    seen: list[export_pb2.VideoJob]
    stream: grpc.aio.UnaryStreamCall[object, export_pb2.VideoJob]
    # What the trackers had asked and observed before this job (tries that ran past).
    activity_before: Counter[str]

    @property
    def activity(self) -> Counter[str]:
        """What the trackers asked and observed for this job."""
        return self.server.supervisor.activity - self.activity_before


@contextlib.asynccontextmanager
async def render_held_near_the_end(
    start_export: StartExport,
    render_processes: RenderProcesses,
    tracker: TrackerSettings = FAST_TRACKER,
) -> AsyncIterator[HeldRender]:
    render_service = render_processes.start_with("--stall-timeout", "60")  # frozen on purpose
    proxy = await TcpProxy("127.0.0.1", render_service.port).start()
    try:
        server = await start_export(proxy.address, tracker=tracker)
        async with (
            create_channel(f"127.0.0.1:{server.port}") as channel,
            create_channel(render_service.address) as render_channel,
        ):
            stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
            render_stub: RenderStub = render_pb2_grpc.RenderServiceStub(render_channel)
            missed: list[str] = []
            for _ in range(HOLD_TRIES):
                before = Counter(server.supervisor.activity)
                with Throttle.children_of(render_service.pid, pause=0.05) as throttle:
                    job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
                    seen, stream = await watch_until(stub, job.id, 2)  # the render service has it
                    try:
                        frozen_at = await freeze_near_the_end(render_stub, job.id, throttle)
                    except RanPastTheHold as ran_past:
                        missed.append(str(ran_past))
                        throttle.close()
                        await read_rest(stream)  # that job ends before the next try
                        continue
                    more, stream = await watch_until(
                        stub, job.id, int(frozen_at.percent), stream=stream
                    )
                    assert more[-1].stage == "Rendering", more[-1]
                    yield HeldRender(
                        server,
                        stub,
                        render_stub,
                        proxy,
                        throttle,
                        job.id,
                        seen + more,
                        stream,
                        before,
                    )
                    return
            raise AssertionError(f"no render held near its end in {HOLD_TRIES} tries: {missed}")
    finally:
        await proxy.close()


async def test_stream_cut_at_95_percent_is_resumed(
    start_export: StartExport,
    render_processes: RenderProcesses,
) -> None:
    """The original failure: the render finishes while the tracker hears nothing, so the job
    would stay at its last percent forever. The stream goes silent near the end, the render
    completes behind it, then the connection is reset: the tracker asks the render service,
    takes the completion it missed and needs no new attempt. The tracker's own look after a
    silence (its stall timeout) is put out of the way, so the reset is what it answers."""
    quiet = replace(FAST_TRACKER, stall_timeout=120.0)
    async with render_held_near_the_end(start_export, render_processes, quiet) as held:
        held.proxy.stall()
        held.throttle.close()
        await wait_for(render_finished(held.render_stub, held.job_id))
        behind = await held.stub.GetExport(export_pb2.GetExportRequest(id=held.job_id))
        assert behind.status == export_pb2.RUNNING and behind.progress < 100, behind
        assert held.proxy.cut() > 0
        held.proxy.resume()
        seen = held.seen + await read_rest(held.stream)
    assert_monotonic(seen)
    assert seen[-2].progress >= 80 and seen[-2].status == export_pb2.RUNNING
    final = seen[-1]
    assert_completed_with_valid_file(final, SLOW_DURATION)
    assert final.attempt == 1  # the finished render was found, not rendered again
    activity = held.activity
    assert activity["GetRender"] >= 1 and activity["CallRender"] == 1, activity


async def test_stream_cut_while_the_render_runs_is_resumed_from_the_last_seq(
    start_export: StartExport,
    render_processes: RenderProcesses,
) -> None:
    """The connection is reset while ffmpeg is held still near the end: the tracker re-attaches
    with WatchRender after the last seq it stored, and the same render goes on to completion."""
    async with render_held_near_the_end(start_export, render_processes) as held:
        assert held.proxy.cut() > 0

        async def reattached() -> bool:
            return held.activity["WatchRender"] >= 1

        try:
            await wait_for(reattached)
        except AssertionError as missed:
            job = await held.stub.GetExport(export_pb2.GetExportRequest(id=held.job_id))
            raise AssertionError(
                f"{missed}; the tracker's activity {held.activity}; {job}"
            ) from None
        held.throttle.close()
        seen = held.seen + await read_rest(held.stream)
    assert_monotonic(seen)
    final = seen[-1]
    assert_completed_with_valid_file(final, SLOW_DURATION)
    assert final.attempt == 1
    assert held.activity["CallRender"] == 1, held.activity


def render_finished(render_stub: RenderStub, render_id: str) -> Callable[[], Awaitable[bool]]:
    async def completed() -> bool:
        info = await render_stub.GetRender(render_pb2.GetRenderRequest(render_id=render_id))
        return bool(info.state == render_pb2.RENDER_STATE_COMPLETED)

    return completed


async def test_render_service_killed_mid_render_is_resubmitted(
    start_export: StartExport, render_processes: RenderProcesses
) -> None:
    render = render_processes.start()
    server = await start_export(render.address)
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
        seen, stream = await watch_until(stub, job.id, 20)
        kill_group(render)  # the service and its ffmpeg, as a crashed machine would
        render_processes.start(port=render.port)
        seen += await read_rest(stream)
    assert_monotonic(seen)
    final = seen[-1]
    assert_completed_with_valid_file(final, SLOW_DURATION)
    assert final.attempt == 2


def unreachable_rounds(server: ExportServer) -> int:
    """Render-service calls that found it unreachable, across the server's trackers."""
    return server.supervisor.activity["RpcFailed.UNAVAILABLE"]


async def test_render_service_down_at_submit_then_up(
    start_export: StartExport,
    render_processes: RenderProcesses,
) -> None:
    """Rounds of an unreachable render service cost no attempt: nothing was ever lost."""
    port = free_port()
    server = await start_export(
        f"127.0.0.1:{port}", tracker=replace(FAST_TRACKER, max_attempts=1, backoff_max=1.0)
    )
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))

        async def asked_three_times() -> bool:
            return unreachable_rounds(server) >= 3

        await wait_for(asked_three_times)
        assert (await stub.GetExport(export_pb2.GetExportRequest(id=job.id))).status in (
            export_pb2.QUEUED,
            export_pb2.RUNNING,
        )
        render_processes.start(port=port)
        updates = await watch(stub, job.id)
    assert_monotonic(updates)
    assert_completed_with_valid_file(updates[-1], SLOW_DURATION)
    assert updates[-1].attempt == 1


async def test_render_service_unreachable_mid_render_costs_no_attempt(
    start_export: StartExport,
    render_service: InProcessRender,
) -> None:
    """A proxy outage in the middle of a render (connections cut, nothing listening for a few
    seconds) with max_attempts 1: the tracker waits it out and re-attaches."""
    proxy = await TcpProxy("127.0.0.1", render_service.port).start()
    port = int(proxy.address.rsplit(":", 1)[1])
    tracker = replace(FAST_TRACKER, max_attempts=1, backoff_initial=0.2, backoff_max=0.5)
    server = await start_export(proxy.address, tracker=tracker)
    try:
        async with create_channel(f"127.0.0.1:{server.port}") as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)
            job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
            seen, stream = await watch_until(stub, job.id, 20)
            await proxy.close()

            async def asked_three_times() -> bool:
                return unreachable_rounds(server) >= 3

            await wait_for(asked_three_times)
            proxy = await TcpProxy("127.0.0.1", render_service.port).start(port=port)
            seen += await read_rest(stream)
    finally:
        await proxy.close()
    assert_monotonic(seen)
    assert_completed_with_valid_file(seen[-1], SLOW_DURATION)
    assert seen[-1].attempt == 1


async def test_render_service_that_never_comes_back_fails_the_job(
    start_export: StartExport,
) -> None:
    server = await start_export(
        f"127.0.0.1:{free_port()}",
        tracker=replace(FAST_TRACKER, retry_budget=2.0, backoff_max=0.5),
    )
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
        updates = await watch(stub, job.id)
    final = updates[-1]
    assert final.status == export_pb2.FAILED
    assert final.error.code == "RENDER_UNAVAILABLE"
    assert "retry budget 2 s" in final.error.message
    assert final.attempt == 1 and final.progress < 100 and final.output_path == ""


async def test_frozen_render_service_is_investigated_by_silence(
    start_export: StartExport, render_processes: RenderProcesses
) -> None:
    render_service = render_processes.start()
    tracker = replace(FAST_TRACKER, stall_timeout=1.5, rpc_timeout=1.0, max_attempts=10)
    server = await start_export(render_service.address, tracker=tracker)
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
        seen, stream = await watch_until(stub, job.id, 10)
        os.kill(render_service.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(tracker.stall_timeout + 1.5)
        finally:
            os.kill(render_service.pid, signal.SIGCONT)
        seen += await read_rest(stream)
    assert_monotonic(seen)
    assert_completed_with_valid_file(seen[-1], SLOW_DURATION)


def start_export_process(render_addr: str, database: str) -> ServiceProcess:
    return start_service(
        "export_service",
        [
            "--listen",
            "127.0.0.1:0",
            "--render-addr",
            render_addr,
            "--database",
            database,
            "--stall-timeout",
            "3",
            "--backoff-initial",
            "0.3",
            "--backoff-max",
            "1.5",
        ],
    )


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_export_service_stopped_mid_render_finishes_the_job_after_restart(
    how: str, render_processes: RenderProcesses, tmp_path: Path
) -> None:
    # A process: stopping the export process blocks this test's event loop meanwhile.
    render_service = render_processes.start()
    database = f"sqlite:///{tmp_path / 'export.db'}"
    processes = [start_export_process(render_service.address, database)]
    try:
        async with create_channel(processes[0].address) as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)
            job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
            before, stream = await watch_until(stub, job.id, 20)
            stream.cancel()
            if how == "SIGKILL":
                processes[0].kill()
            else:
                assert processes[0].terminate() == 0
        store = await open_store(database)
        try:
            stored = await store.get(job.id)
        finally:
            await store.close()
        assert stored.status is JobStatus.RUNNING  # left for the next start, not cancelled
        processes.append(start_export_process(render_service.address, database))
        async with create_channel(processes[1].address) as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)
            after = await watch(stub, job.id, after_version=before[-1].version)
            print(processes[1].log())
    finally:
        stop_processes(processes)
    assert_monotonic([*before, *after])
    final = after[-1]
    assert_completed_with_valid_file(final, SLOW_DURATION)
    assert final.attempt == 1  # the render survived; the new process re-attached to it
