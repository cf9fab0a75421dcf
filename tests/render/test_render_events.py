"""A test-pattern render end to end: event order, seq, percent bands, terminal content, the file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.render.conftest import (
    Running,
    collect,
    file_size,
    kind,
    long_spec,
    output_entries,
    partial_files,
    pattern_spec,
    render_request,
)
from tests.support.media import media_duration
from tests.support.processes import ServiceProcess
from tests.support.throttle import Throttle
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc

STAGE_ORDER = ["Queued", "Preparing", "Rendering", "Finalizing", "Verifying"]
BANDS = {
    "Queued": (0.0, 0.0),
    "Preparing": (0.0, 2.0),
    "Rendering": (2.0, 95.0),
    "Finalizing": (95.0, 99.0),
    "Verifying": (99.0, 99.0),
}


def assert_well_formed(events: list[render_pb2.RenderEvent], render_id: str) -> None:
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert all(event.render_id == render_id for event in events)
    assert kind(events[-1]) in ("completed", "failed", "cancelled")
    assert all(kind(event) == "progress" for event in events[:-1])
    percents = [event.progress.percent for event in events[:-1]]
    assert percents == sorted(percents), "percent decreased"
    assert all(p < 100 for p in percents)
    stages = [event.progress.stage for event in events[:-1]]
    assert [STAGE_ORDER.index(s) for s in stages] == sorted(STAGE_ORDER.index(s) for s in stages)
    for event in events[:-1]:
        low, high = BANDS[event.progress.stage]
        assert low <= event.progress.percent <= high, event


async def test_render_streams_ordered_events_and_writes_a_verified_file(service: Running) -> None:
    events = await collect(service.stub.Render(render_request("basic-1", pattern_spec(2.0))))

    assert_well_formed(events, "basic-1")
    stages = [event.progress.stage for event in events[:-1]]
    assert stages[0] == "Queued" and events[0].progress.percent == 0
    assert {"Preparing", "Rendering", "Finalizing", "Verifying"} <= set(stages)
    assert stages[-1] == "Verifying" and events[-2].progress.percent == 99
    completed = events[-1].completed
    output = Path(completed.output_path)
    assert output.is_absolute()
    assert output == (service.config.output_dir / "basic-1.mp4").resolve()
    assert file_size(output) == completed.size_bytes > 0
    assert abs(media_duration(output) - 2.0) <= 0.5
    assert abs(completed.duration_seconds - 2.0) <= 0.5
    assert partial_files(service.config.output_dir) == []

    info = await service.stub.GetRender(render_pb2.GetRenderRequest(render_id="basic-1"))
    assert info.state == render_pb2.RENDER_STATE_COMPLETED
    assert info.last_event == events[-1]


async def test_second_render_call_attaches_instead_of_rendering_again(service: Running) -> None:
    spec = pattern_spec(2.0)
    first = service.stub.Render(render_request("twice-1", spec))
    second = service.stub.Render(render_request("twice-1", spec))
    first_events, second_events = await asyncio.gather(collect(first), collect(second))

    assert kind(first_events[-1]) == "completed"
    assert second_events == first_events  # same seqs, same timestamps: one render
    later = await collect(service.stub.Render(render_request("twice-1", spec)))
    assert later == first_events
    assert [p.name for p in output_entries(service.config.output_dir)] == ["twice-1.mp4"]


async def test_same_render_id_with_another_spec_is_rejected(service: Running) -> None:
    await collect(service.stub.Render(render_request("dup-1", pattern_spec(1.0))))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(service.stub.Render(render_request("dup-1", pattern_spec(2.0))))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "render_id" in (caught.value.details() or "")


async def test_watch_of_a_finished_render_replays_and_ends_with_the_terminal(
    service: Running,
) -> None:
    events = await collect(service.stub.Render(render_request("done-1", pattern_spec(1.0))))
    last = events[-1].seq

    everything = await collect(
        service.stub.WatchRender(render_pb2.WatchRenderRequest(render_id="done-1"))
    )
    assert everything == events
    tail = await collect(
        service.stub.WatchRender(render_pb2.WatchRenderRequest(render_id="done-1", after_seq=2))
    )
    assert tail == events[2:]
    only_terminal = await collect(
        service.stub.WatchRender(render_pb2.WatchRenderRequest(render_id="done-1", after_seq=last))
    )
    assert only_terminal == [events[-1]]


async def test_cancel_of_a_finished_render_returns_it_unchanged(service: Running) -> None:
    events = await collect(service.stub.Render(render_request("fin-1", pattern_spec(1.0))))
    info = await service.stub.CancelRender(render_pb2.CancelRenderRequest(render_id="fin-1"))
    assert info.state == render_pb2.RENDER_STATE_COMPLETED
    assert info.last_event == events[-1]
    assert file_size(Path(events[-1].completed.output_path)) > 0


@pytest.mark.parametrize("method", ["GetRender", "CancelRender", "WatchRender"])
async def test_unknown_render_is_not_found(service: Running, method: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if method == "GetRender":
            await service.stub.GetRender(render_pb2.GetRenderRequest(render_id="nobody"))
        elif method == "CancelRender":
            await service.stub.CancelRender(render_pb2.CancelRenderRequest(render_id="nobody"))
        else:
            await collect(
                service.stub.WatchRender(render_pb2.WatchRenderRequest(render_id="nobody"))
            )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


# Renders tried until one brings enough reports (a loaded machine can keep the throttle's thread
# from running for as long as this render takes at full speed).
THROTTLE_TRIES = 3
# Reports with frames between the first and the last that a try must bring.
RENDERING_REPORTS = 3


async def test_progress_counts_video_frames_and_finalizing_waits_for_the_last(
    process_factory: Callable[..., ServiceProcess],
) -> None:
    """FFmpeg's out_time is the furthest of all streams: when the audio ends it runs ahead of a
    video encoder that holds frames back (SVT-AV1 here, by about a second), and on the last
    blocks it is N/A. Rendering progress follows the frames written instead, and Finalizing
    starts only with the last frame."""
    service = process_factory()
    # 20 s, not 10: the AV1 encoders hold back well over a hundred frames and write them in
    # bursts, so a 10 s video could bring a single report with frames between the first and
    # the last (Debian's ffmpeg 5.1 with SVT-AV1 did, on a loaded machine).
    spec = pattern_spec(20.0, width=320, height=240, fps=25.0)
    spec.output.video_codec = "av1"
    frames = 20 * 25
    tries: list[list[int]] = []
    async with create_channel(service.address) as channel:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        for attempt in range(THROTTLE_TRIES):
            # Reports come every 0.5 s of wall time: ffmpeg runs 50 ms in every 450 ms, about
            # 1/9 of its speed (this render takes 1-2.5 s at full speed here, 10-25 s so).
            with Throttle.children_of(service.pid, pause=0.4, run=0.05):
                events = await collect(stub.Render(render_request(f"frames-{attempt}", spec)))
            assert_well_formed(events, f"frames-{attempt}")
            assert kind(events[-1]) == "completed", events[-1]
            rendering = [
                e.progress for e in events if e.progress.stage == "Rendering" and e.progress.frame
            ]
            if len(rendering) >= RENDERING_REPORTS:
                break
            tries.append([progress.frame for progress in rendering])
        else:
            raise AssertionError(f"too few reports with frames in {THROTTLE_TRIES} tries: {tries}")
    for progress in rendering:
        assert progress.frame < frames, progress
        assert progress.out_time_seconds == pytest.approx(progress.frame / 25.0), progress
        assert progress.percent == pytest.approx(2.0 + 93.0 * progress.frame / frames, abs=0.01)
    finalizing = next(e.progress for e in events if e.progress.stage == "Finalizing")
    assert finalizing.frame == frames, finalizing


async def test_eta_is_rounded_to_a_tenth_of_a_second(service: Running) -> None:
    """The ETA is an estimate: it is sent to a tenth of a second, never as 111.26728971962618;
    a replay (WatchRender) sends the same values."""
    call = service.stub.Render(render_request("eta-1", long_spec()))
    estimates: list[float] = []
    async for event in call:
        if kind(event) == "progress" and event.progress.eta_seconds > 0:
            estimates.append(event.progress.eta_seconds)
            if len(estimates) >= 3:
                break
    call.cancel()
    await service.stub.CancelRender(render_pb2.CancelRenderRequest(render_id="eta-1"))
    assert estimates
    assert all(eta == round(eta, 1) for eta in estimates), estimates
    replayed = await collect(
        service.stub.WatchRender(render_pb2.WatchRenderRequest(render_id="eta-1"))
    )
    etas = [e.progress.eta_seconds for e in replayed if kind(e) == "progress"]
    assert set(estimates) <= set(etas)
    assert all(eta == round(eta, 1) for eta in etas), etas
