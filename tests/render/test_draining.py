"""A render service draining on SIGTERM (real processes, real FFmpeg): NOT_SERVING, new renders
refused with the DRAINING reason, queued renders handed back at once, running renders finished
and the process ending with status 0; a drain cut short by its timeout or a second signal fails
what still runs with SHUTDOWN and leaves nothing behind; the launcher waits a drain out."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.render.conftest import (
    collect,
    events_until,
    ffmpeg_pids,
    is_rendering,
    kind,
    long_spec,
    one_ffmpeg,
    partial_files,
    pattern_spec,
    pid_alive,
    render_request,
)
from tests.support.media import media_duration
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess
from tests.support.render_dirs import RenderDirs
from videojob.endpoints import RENDER_SERVICE
from videojob.errors import ERROR_DOMAIN, Reason
from videojob.grpc_errors import error_info
from videojob.grpc_setup import create_channel
from videojob.output_check import DURATION_TOLERANCE_SECONDS
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2
from videojob_launcher import Role, Stack, StackConfig
from videojob_launcher.process import STOP_GRACE_SECONDS

SERVICE = RENDER_SERVICE
CAPACITY = render_pb2.GetCapacityRequest()
# Long enough to be caught mid-render, short enough to finish in a test.
MEDIUM_SECONDS = 30.0


def medium_spec() -> spec_pb2.RenderSpec:
    return pattern_spec(MEDIUM_SECONDS, width=320, height=240, fps=25.0)


def is_queued(event: render_pb2.RenderEvent) -> bool:
    return kind(event) == "progress" and event.progress.stage == "Queued"


async def stopped_ffmpeg(output_dir: Path, render_id: str) -> int:
    """The render's FFmpeg, SIGSTOPped: the render stays mid-way until SIGCONT."""
    pid = await one_ffmpeg(output_dir, render_id)
    os.kill(pid, signal.SIGSTOP)
    return pid


async def test_sigterm_drains_finishing_the_running_render_and_handing_back_the_queued_one(
    process_factory: Callable[..., ServiceProcess], dirs: RenderDirs
) -> None:
    service = process_factory("--max-concurrent", "1")
    async with create_channel(service.address) as channel:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        statuses = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert (await statuses.read()).status == health_pb2.HealthCheckResponse.SERVING
        running = stub.Render(render_request("drain-run", medium_spec()))
        await events_until(running, is_rendering)
        pid = await stopped_ffmpeg(dirs.output, "drain-run")
        try:
            queued = stub.Render(render_request("drain-queued", pattern_spec(1.0)))
            await events_until(queued, is_queued)

            os.kill(service.pid, signal.SIGTERM)
            status = await statuses.read()
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            handed_back = (await collect(queued))[-1]
            capacity = await stub.GetCapacity(CAPACITY)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await collect(stub.Render(render_request("drain-new", pattern_spec(1.0))))
            info = await stub.GetRender(render_pb2.GetRenderRequest(render_id="drain-run"))
            watched = stub.WatchRender(render_pb2.WatchRenderRequest(render_id="drain-run"))
            await events_until(watched, is_rendering)
        finally:
            os.kill(pid, signal.SIGCONT)
        rest = await collect(watched)
        await collect(running)

    assert kind(handed_back) == "failed", handed_back
    assert handed_back.failed.code == "SHUTDOWN"
    assert handed_back.failed.never_started, "a queued render is handed back, not lost"
    assert (capacity.draining, capacity.running, capacity.queued) == (True, 1, 0)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    reason = error_info(refused.value)
    assert reason is not None
    assert (reason.reason, reason.domain) == (Reason.DRAINING.value, ERROR_DOMAIN)
    assert reason.metadata["instance_id"] == capacity.instance_id
    assert info.state == render_pb2.RENDER_STATE_RUNNING

    completed = rest[-1]
    assert kind(completed) == "completed", completed
    output = Path(completed.completed.output_path)
    assert output == (dirs.output / "drain-run.mp4").resolve()
    assert media_duration(output) == pytest.approx(MEDIUM_SECONDS, abs=DURATION_TOLERANCE_SECONDS)
    assert await asyncio.to_thread(service.popen.wait, 30) == 0
    assert partial_files(dirs.output) == []


@pytest.mark.parametrize("ending", ["drain timeout", "second signal"])
async def test_a_drain_cut_short_fails_the_running_render_with_shutdown_and_leaves_nothing(
    ending: str, process_factory: Callable[..., ServiceProcess], dirs: RenderDirs
) -> None:
    service = process_factory(*(["--drain-timeout", "1"] if ending == "drain timeout" else []))
    async with create_channel(service.address) as channel:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        statuses = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        assert (await statuses.read()).status == health_pb2.HealthCheckResponse.SERVING
        call = stub.Render(render_request("cut-1", long_spec()))
        await events_until(call, is_rendering)
        pid = await one_ffmpeg(dirs.output, "cut-1")

        os.kill(service.pid, signal.SIGTERM)
        status = await statuses.read()
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        if ending == "second signal":  # the default drain timeout is minutes
            os.kill(service.pid, signal.SIGINT)
        rest = await asyncio.wait_for(collect(call), 60)

    failed = rest[-1]
    assert kind(failed) == "failed", failed
    assert failed.failed.code == "SHUTDOWN"
    assert not failed.failed.never_started, "it ran: this attempt is lost"
    assert await asyncio.to_thread(service.popen.wait, 30) == 0
    assert not pid_alive(pid)
    assert ffmpeg_pids(dirs.output, "cut-1") == []
    assert partial_files(dirs.output) == []


async def test_the_launcher_waits_out_a_render_services_drain(tmp_path: Path) -> None:
    """Stopped on its own, a render service gets its drain timeout (not the stack's short
    grace, which would end in SIGKILL) to finish what it runs."""
    config = StackConfig(
        tmp_path,
        render=Role(args=("--drain-timeout", "120")),
        export=Role(count=0),
        gateway=Role(count=0),
        stop_grace=0.5,
    )
    async with Stack(config) as stack:
        render = stack.render
        assert render.stop_grace == 120 + STOP_GRACE_SECONDS
        async with create_channel(render.address) as channel:
            stub = render_pb2_grpc.RenderServiceStub(channel)
            call = stub.Render(render_request("rolling-1", medium_spec()))
            await events_until(call, is_rendering)
            pid = await stopped_ffmpeg(stack.output_dir, "rolling-1")
            try:
                stopping = asyncio.create_task(render.astop())

                async def draining() -> bool:
                    return bool((await stub.GetCapacity(CAPACITY)).draining)

                await wait_until(draining, "the render service to drain")
            finally:
                os.kill(pid, signal.SIGCONT)
            events = await collect(call)
        assert await stopping == 0
    assert kind(events[-1]) == "completed", events[-1]
