"""A split job's parts and join with the output directory in a real SeaweedFS (``--output-dir
s3://...``): each part is stored like any render, the join fetches them into its scratch
folder (and the audio render's file, when it muxes one), joins them, stores the joined file and
leaves nothing of them in its scratch directory. A part or audio location outside the output
location is refused naming the field."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from render_service.config import RenderConfig
from render_service.server import RenderServer, create_server
from tests.support.seaweedfs import SeaweedFS
from tests.support.specs import pattern_spec
from tests.support.split import (
    FPS,
    PART_FRAMES,
    SECONDS,
    TOTAL,
    audio_seconds,
    decoded_frames,
    join_spec,
    part_spec,
)
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2
from videojob.storage.object_store import ObjectStore

if TYPE_CHECKING:
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub

pytestmark = [pytest.mark.object_store, pytest.mark.ffmpeg]


@contextlib.asynccontextmanager
async def running(config: RenderConfig) -> AsyncIterator[RenderServer]:
    server = await create_server(config)
    try:
        yield server
    finally:
        await server.stop(0)


async def events_of(
    stub: RenderServiceAsyncStub, render_id: str, spec: spec_pb2.RenderSpec
) -> list[render_pb2.RenderEvent]:
    call = stub.Render(render_pb2.RenderRequest(render_id=render_id, spec=spec))
    return [event async for event in call]


async def test_parts_stored_in_the_object_store_are_fetched_joined_and_stored(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    location = seaweedfs.location(f"split-{secrets.token_hex(4)}")
    scratch = tmp_path / "scratch"
    config = RenderConfig(
        listen="127.0.0.1:0",
        output_dir=tmp_path / "unused",
        media_root=tmp_path / "media",
        scratch_dir=scratch,
        output_store=location,
        store_settings=seaweedfs.settings(),
        max_concurrent=3,
    )
    base = pattern_spec(SECONDS, fps=FPS, container="webm")
    async with running(config) as server:
        channel = create_channel(f"127.0.0.1:{server.port}")
        stub: RenderServiceAsyncStub = render_pb2_grpc.RenderServiceStub(channel)
        try:
            parts = await asyncio.gather(
                *(
                    events_of(stub, f"stored-part{index}", part_spec(base, index, PART_FRAMES))
                    for index in range(len(PART_FRAMES))
                )
            )
            paths = [events[-1].completed.output_path for events in parts]
            assert all(path.startswith(f"s3://{location.bucket}/") for path in paths), paths
            outside = paths[1].replace(location.prefix, "elsewhere")
            refused = await events_of(
                stub, "stored-outside", join_spec(base, [paths[0], outside, paths[2]], TOTAL)
            )
            joined = await events_of(stub, "stored-join", join_spec(base, paths, TOTAL))
        finally:
            await channel.close(None)

    assert refused[-1].WhichOneof("event") == "failed"
    assert "spec.join.part_paths[1]" in refused[-1].failed.message
    assert joined[-1].WhichOneof("event") == "completed", joined[-1]
    stages = [event.progress.stage for event in joined[:-1]]
    assert stages.index("Joining") < stages.index("Verifying") < stages.index("Uploading")
    completed = joined[-1].completed
    assert completed.output_path == location.url_of(location.key_for("stored-join.webm"))
    local = tmp_path / "joined.webm"
    async with ObjectStore(seaweedfs.settings()) as store:
        await store.download_file(location.bucket, location.key_for("stored-join.webm"), local)
    assert len(await asyncio.to_thread(decoded_frames, local)) == TOTAL
    assert not (scratch / "joins").exists() or not any((scratch / "joins").iterdir())


async def test_an_audio_render_stored_beside_the_parts_is_fetched_and_muxed_by_the_join(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    location = seaweedfs.location(f"split-audio-{secrets.token_hex(4)}")
    scratch = tmp_path / "scratch"
    config = RenderConfig(
        listen="127.0.0.1:0",
        output_dir=tmp_path / "unused",
        media_root=tmp_path / "media",
        scratch_dir=scratch,
        output_store=location,
        store_settings=seaweedfs.settings(),
        max_concurrent=4,
    )
    base = pattern_spec(SECONDS, fps=FPS)
    audio = spec_pb2.RenderSpec()
    audio.CopyFrom(base)
    audio.audio.total_frames = TOTAL
    audio.audio.fps = FPS
    async with running(config) as server:
        channel = create_channel(f"127.0.0.1:{server.port}")
        stub: RenderServiceAsyncStub = render_pb2_grpc.RenderServiceStub(channel)
        try:
            *parts, sound = await asyncio.gather(
                *(
                    events_of(stub, f"sound-part{index}", part_spec(base, index, PART_FRAMES))
                    for index in range(len(PART_FRAMES))
                ),
                events_of(stub, "sound-audio", audio),
            )
            paths = [events[-1].completed.output_path for events in parts]
            join = join_spec(base, paths, TOTAL)
            join.join.audio_path = sound[-1].completed.output_path
            outside = spec_pb2.RenderSpec()
            outside.CopyFrom(join)
            outside.join.audio_path = join.join.audio_path.replace(location.prefix, "elsewhere")
            refused = await events_of(stub, "sound-outside", outside)
            joined = await events_of(stub, "sound-join", join)
        finally:
            await channel.close(None)

    assert sound[-1].WhichOneof("event") == "completed", sound[-1]
    assert sound[-1].completed.output_path == location.url_of(location.key_for("sound-audio.mp4"))
    assert refused[-1].WhichOneof("event") == "failed"
    assert "spec.join.audio_path" in refused[-1].failed.message
    assert joined[-1].WhichOneof("event") == "completed", joined[-1]
    local = tmp_path / "joined.mp4"
    async with ObjectStore(seaweedfs.settings()) as store:
        await store.download_file(location.bucket, location.key_for("sound-join.mp4"), local)
    assert len(await asyncio.to_thread(decoded_frames, local)) == TOTAL
    assert abs(await asyncio.to_thread(audio_seconds, local) - SECONDS) <= 1 / FPS
    assert not (scratch / "joins").exists() or not any((scratch / "joins").iterdir())
