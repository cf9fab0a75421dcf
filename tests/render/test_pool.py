"""What a pool of render services needs from each one: GetCapacity telling the truth about its
load and identity, an instance id that survives restarts, and partial files that belong to their
own service, so services sharing one output directory never remove each other's work."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from render_service.config import RenderConfig
from render_service.output_dir import partial_name
from tests.render.conftest import (
    StartServer,
    collect,
    events_until,
    is_rendering,
    kind,
    long_spec,
    one_ffmpeg,
    pattern_spec,
    render_request,
)
from tests.support.media import media_duration
from tests.support.processes import ServiceProcess
from tests.support.render_dirs import RenderDirs
from videojob.grpc_setup import create_channel
from videojob.output_check import DURATION_TOLERANCE_SECONDS
from videojob.render.v1 import render_pb2, render_pb2_grpc

if TYPE_CHECKING:
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub

CAPACITY = render_pb2.GetCapacityRequest()


def is_queued(event: render_pb2.RenderEvent) -> bool:
    return kind(event) == "progress" and event.progress.stage == "Queued"


def load(capacity: render_pb2.Capacity) -> tuple[int, int, bool]:
    return capacity.running, capacity.queued, capacity.draining


async def test_capacity_follows_renders_as_they_start_and_end(
    start: StartServer, config: RenderConfig
) -> None:
    service = await start(config, max_concurrent=1, max_queue=3, instance_id="cap-1")
    stub = service.stub
    idle = await stub.GetCapacity(CAPACITY)
    assert (idle.max_concurrent, idle.max_queue, idle.instance_id) == (1, 3, "cap-1")
    assert load(idle) == (0, 0, False)

    first = stub.Render(render_request("cap-a", long_spec()))
    await events_until(first, is_rendering)
    assert load(await stub.GetCapacity(CAPACITY)) == (1, 0, False)
    second = stub.Render(render_request("cap-b", long_spec()))
    await events_until(second, is_queued)
    assert load(await stub.GetCapacity(CAPACITY)) == (1, 1, False)

    await stub.CancelRender(render_pb2.CancelRenderRequest(render_id="cap-a"))
    await events_until(second, is_rendering)  # it got the slot
    assert load(await stub.GetCapacity(CAPACITY)) == (1, 0, False)
    await stub.CancelRender(render_pb2.CancelRenderRequest(render_id="cap-b"))
    assert load(await stub.GetCapacity(CAPACITY)) == (0, 0, False)

    await service.server.drain(0)
    assert load(await stub.GetCapacity(CAPACITY)) == (0, 0, True)


async def test_a_second_service_with_a_used_instance_id_is_refused(
    start: StartServer, config: RenderConfig
) -> None:
    await start(config, instance_id="twin")
    with pytest.raises(ValueError, match="in use by another render service"):
        await start(config, instance_id="twin")


async def instance_id(stub: RenderServiceAsyncStub) -> str:
    return (await stub.GetCapacity(CAPACITY)).instance_id


async def test_services_sharing_an_output_directory_remove_only_their_own_partial_files(
    process_factory: Callable[..., ServiceProcess], dirs: RenderDirs
) -> None:
    first, second = process_factory(), process_factory()
    async with (
        create_channel(first.address) as first_channel,
        create_channel(second.address) as second_channel,
    ):
        first_stub = render_pb2_grpc.RenderServiceStub(first_channel)
        second_stub = render_pb2_grpc.RenderServiceStub(second_channel)
        first_id, second_id = await instance_id(first_stub), await instance_id(second_stub)
        assert first_id and second_id and first_id != second_id

        # The first one dies mid-render (SIGKILL): its partial file stays behind.
        lost = first_stub.Render(render_request("lost-1", long_spec()))
        await events_until(lost, is_rendering)
        lost_partial = dirs.output / partial_name(first_id, "lost-1", "mp4")
        assert lost_partial.exists()
        # The second one renders, held mid-render (its FFmpeg stopped) while the first restarts.
        spec = pattern_spec(30.0, width=320, height=240, fps=25.0)
        kept = second_stub.Render(render_request("kept-1", spec))
        await events_until(kept, is_rendering)
        pid = await one_ffmpeg(dirs.output, "kept-1")
        kept_partial = dirs.output / partial_name(second_id, "kept-1", "mp4")
        os.kill(pid, signal.SIGSTOP)
        try:
            await first.akill()
            lost.cancel()
            await first.astart()
            assert await instance_id(first_stub) == first_id, "the id survives a restart"
            assert not lost_partial.exists(), "its own stale partial file is removed at start"
            # A render ending on the first one sweeps its partial files again.
            swept = await collect(first_stub.Render(render_request("sweep-1", pattern_spec(1.0))))
            assert kind(swept[-1]) == "completed"
            assert kept_partial.exists()
        finally:
            os.kill(pid, signal.SIGCONT)
        events = await collect(kept)

    # Removed under it, the partial file could not have been moved into place.
    completed = events[-1]
    assert kind(completed) == "completed", completed
    assert media_duration(dirs.output / "kept-1.mp4") == pytest.approx(
        30.0, abs=DURATION_TOLERANCE_SECONDS
    )
    assert completed.completed.output_path == str((dirs.output / "kept-1.mp4").resolve())
