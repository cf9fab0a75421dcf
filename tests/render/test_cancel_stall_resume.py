"""Cancel, stall detection, a cut stream resumed with WatchRender, the queue limit."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from render_service.config import RenderConfig
from render_service.output_dir import partial_name
from tests.render.conftest import (
    Running,
    StartServer,
    collect,
    events_until,
    ffmpeg_pids,
    is_rendering,
    kind,
    long_spec,
    one_ffmpeg,
    output_entries,
    pattern_spec,
    pid_alive,
    render_request,
)
from tests.support.processes import ServiceProcess
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc

# For renders only (they ask for -stats_period): first computes for a while without printing,
# reading or writing anything, as an encoder that buffers frames (libvpx) looks from outside,
# then becomes the real FFmpeg in the same process.
SILENTLY_BUSY_WRAPPER = """#!{python}
import os, sys, time
if "-stats_period" in sys.argv:
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        pass
real = os.environ["VIDEOJOB_REAL_FFMPEG"]
os.execv(real, [real, *sys.argv[1:]])
"""


async def _frozen_render(
    service: Running, render_id: str
) -> tuple[grpc.aio.UnaryStreamCall[render_pb2.RenderRequest, render_pb2.RenderEvent], int]:
    """Starts a long render, waits until FFmpeg runs, SIGSTOPs it; returns (call, pid)."""
    call = service.stub.Render(render_request(render_id, long_spec()))
    await events_until(call, is_rendering)
    pid = await one_ffmpeg(service.config.output_dir, render_id)
    os.kill(pid, signal.SIGSTOP)
    return call, pid


async def test_cancel_kills_a_stopped_ffmpeg_and_removes_the_partial_file(
    service: Running,
) -> None:
    call, pid = await _frozen_render(service, "cancel-1")
    partial = service.partial("cancel-1")
    assert partial.exists()

    info = await service.stub.CancelRender(render_pb2.CancelRenderRequest(render_id="cancel-1"))

    assert not pid_alive(pid), "ffmpeg survived CancelRender"
    assert not partial.exists()
    assert info.state == render_pb2.RENDER_STATE_CANCELLED
    assert kind(info.last_event) == "cancelled"
    rest = await collect(call)
    assert kind(rest[-1]) == "cancelled"
    assert output_entries(service.config.output_dir) == []
    again = await service.stub.CancelRender(render_pb2.CancelRenderRequest(render_id="cancel-1"))
    assert again == info


async def test_cancel_of_a_queued_render(start: StartServer, config: RenderConfig) -> None:
    service = await start(config, max_concurrent=1)
    _, pid = await _frozen_render(service, "busy-1")
    queued = service.stub.Render(render_request("queued-1", pattern_spec(1.0)))
    first = await events_until(queued, lambda e: True)
    assert first[0].progress.stage == "Queued"

    info = await service.stub.CancelRender(render_pb2.CancelRenderRequest(render_id="queued-1"))
    assert info.state == render_pb2.RENDER_STATE_CANCELLED
    rest = await collect(queued)
    assert [kind(e) for e in rest][-1] == "cancelled"
    assert all(e.progress.stage == "Queued" for e in rest[:-1])
    await service.stub.CancelRender(render_pb2.CancelRenderRequest(render_id="busy-1"))
    assert not pid_alive(pid)


async def test_stalled_ffmpeg_is_killed_and_the_render_fails(
    start: StartServer, config: RenderConfig
) -> None:
    service = await start(config, stall_timeout=1.5)
    call, pid = await _frozen_render(service, "stall-1")

    rest = await collect(call)

    failed = rest[-1]
    assert kind(failed) == "failed", rest
    assert failed.failed.code == "STALLED"
    assert "no progress" in failed.failed.message
    assert not pid_alive(pid)
    assert ffmpeg_pids(service.config.output_dir, "stall-1") == []
    assert output_entries(service.config.output_dir) == []
    heartbeats = [e for e in rest[:-1] if e.progress.heartbeat]
    assert heartbeats, "no heartbeat while ffmpeg was frozen"
    assert all(e.progress.stage == "Rendering" for e in heartbeats)


async def test_ffmpeg_busy_without_output_is_not_stalled(
    process_factory: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    wrapper = tmp_path / "busy-ffmpeg"
    wrapper.write_text(SILENTLY_BUSY_WRAPPER.format(python=sys.executable))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    service = process_factory(
        "--stall-timeout",
        "1",
        env={"FFMPEG_BINARY": str(wrapper), "VIDEOJOB_REAL_FFMPEG": ffmpeg_binary()},
    )
    channel = create_channel(service.address)
    try:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        events = await collect(
            stub.Render(
                render_request(
                    "busy-1",
                    pattern_spec(1.0, container="webm", video_codec="vp9", audio_codec="opus"),
                )
            )
        )
    finally:
        await channel.close(None)

    assert kind(events[-1]) == "completed", events[-1]


async def test_watch_resumes_a_cut_stream_without_gaps_or_duplicates(service: Running) -> None:
    call = service.stub.Render(render_request("resume-1", pattern_spec(3.0)))
    before = await events_until(call, is_rendering)
    call.cancel()
    last = before[-1].seq

    after = await collect(
        service.stub.WatchRender(
            render_pb2.WatchRenderRequest(render_id="resume-1", after_seq=last)
        )
    )

    seqs = [e.seq for e in before + after]
    assert seqs == list(range(1, len(seqs) + 1))
    assert kind(after[-1]) == "completed"


async def test_queue_limit_answers_resource_exhausted(
    start: StartServer, config: RenderConfig
) -> None:
    service = await start(config, max_concurrent=1, max_queue=1)
    _, pid = await _frozen_render(service, "slot-1")
    waiting = service.stub.Render(render_request("wait-1", pattern_spec(1.0)))
    await events_until(waiting, lambda e: True)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(service.stub.Render(render_request("over-1", pattern_spec(1.0))))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    await service.stub.CancelRender(render_pb2.CancelRenderRequest(render_id="slot-1"))
    rest = await collect(waiting)
    assert kind(rest[-1]) == "completed"
    assert not pid_alive(pid)


async def test_stale_partial_files_are_removed_on_start(
    start: StartServer, config: RenderConfig
) -> None:
    """Only this service's own: another service sharing the directory may be writing its own."""
    stale = config.output_dir / partial_name("me", "old-1", "mp4")
    stale.write_bytes(b"half a video")
    others = config.output_dir / partial_name("other", "old-2", "mp4")
    others.write_bytes(b"half a video another service is writing")
    keep = config.output_dir / "done-1.mp4"
    keep.write_bytes(b"a finished video")
    service = await start(config, instance_id="me")
    assert service.server.instance_id == "me"
    assert not stale.exists()
    assert others.exists()
    assert keep.exists()


async def test_unwritable_output_dir_fails_the_render(
    start: StartServer, config: RenderConfig
) -> None:
    service = await start(config)
    shutil.rmtree(config.output_dir)
    config.output_dir.write_text("not a directory")
    events = await collect(service.stub.Render(render_request("nowrite-1", pattern_spec(1.0))))
    assert kind(events[-1]) == "failed"
    assert events[-1].failed.code == "OUTPUT_UNWRITABLE"


async def test_finished_renders_are_forgotten_after_retention(
    start: StartServer, config: RenderConfig
) -> None:
    service = await start(config, retention=0.3)
    await collect(service.stub.Render(render_request("short-1", pattern_spec(1.0))))

    async def gone() -> bool:
        try:
            await service.stub.GetRender(render_pb2.GetRenderRequest(render_id="short-1"))
        except grpc.aio.AioRpcError as error:
            return error.code() == grpc.StatusCode.NOT_FOUND
        return False

    for _ in range(100):
        if await gone():
            break
        await asyncio.sleep(0.05)
    assert await gone()
