"""A render whose inputs are objects (``--media-root s3://...``) and cannot be fetched once it has
its slot: the object deleted behind the service since the render was accepted, or the store
gone. Each render fails saying why (a missing object as a missing file, naming the field), and
leaves no fetched input behind. The render service runs in-process on port 0; its one slot is
held by a long test pattern until the input is gone, so the fetch happens after."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from render_service.config import RenderConfig
from render_service.server import RenderServer, create_server
from tests.support.media import make_clip
from tests.support.seaweedfs import SeaweedFS
from tests.support.specs import pattern_spec
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore

pytestmark = [pytest.mark.object_store, pytest.mark.ffmpeg]

CLIP = "clips/clip.mp4"
InputRemover = Callable[[SeaweedFS, S3Location], Awaitable[None]]
RenderCall = grpc.aio.UnaryStreamCall[render_pb2.RenderRequest, render_pb2.RenderEvent]


async def running_past_queued(call: RenderCall) -> None:
    """Returns once the render has left Queued: it holds a slot."""
    while isinstance(event := await call.read(), render_pb2.RenderEvent):
        if event.WhichOneof("event") == "progress" and event.progress.stage != "Queued":
            return
    raise AssertionError("the render ended before it started")


async def render_with_input_gone(
    store: SeaweedFS, tmp_path: Path, take_input_away: InputRemover
) -> tuple[render_pb2.RenderEvent, Path]:
    """Stores a clip, starts a render service on it with one slot, fills the slot, submits a
    transcode of the clip (accepted: the object is there), calls ``take_input_away(store,
    location)``, frees the slot; the transcode's terminal event and the scratch directory."""
    location = store.location(f"render-inputs-{secrets.token_hex(4)}")
    async with ObjectStore(store.settings()) as opened:
        clip = make_clip(tmp_path / "clip.mp4")
        await opened.upload_file(clip, location.bucket, location.key_for(CLIP))
    scratch_dir = tmp_path / "scratch"
    config = RenderConfig(
        listen="127.0.0.1:0",
        output_dir=tmp_path / "out",
        media_root=tmp_path / "unused",
        scratch_dir=scratch_dir,
        media_store=location,
        store_settings=store.settings(),
        max_concurrent=1,
    )
    async with running(config) as server:
        channel = create_channel(f"127.0.0.1:{server.port}")
        stub = render_pb2_grpc.RenderServiceStub(channel)
        try:
            blocker = stub.Render(
                render_pb2.RenderRequest(render_id="blocker", spec=pattern_spec(3600.0))
            )
            await running_past_queued(blocker)  # holding the one slot
            spec = spec_pb2.RenderSpec()
            spec.source.transcode.input_path = CLIP
            spec.output.preset = "ultrafast"
            transcode = stub.Render(render_pb2.RenderRequest(render_id="transcode", spec=spec))
            await transcode.read()  # accepted (queued): its object was there
            await take_input_away(store, location)
            await stub.CancelRender(render_pb2.CancelRenderRequest(render_id="blocker"))
            events: list[render_pb2.RenderEvent] = []
            while isinstance(event := await transcode.read(), render_pb2.RenderEvent):
                events.append(event)
        finally:
            await channel.close(None)
    return events[-1], scratch_dir


@contextlib.asynccontextmanager
async def running(config: RenderConfig) -> AsyncIterator[RenderServer]:
    server = await create_server(config)
    try:
        yield server
    finally:
        await server.stop(0)


async def delete_the_object(store: SeaweedFS, location: S3Location) -> None:
    async with ObjectStore(store.settings()) as opened:
        await opened.delete(location.bucket, location.key_for(CLIP))


async def kill_the_store(store: SeaweedFS, location: S3Location) -> None:
    store.kill()


async def test_an_object_deleted_after_the_render_was_accepted_fails_it_naming_the_field(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    last, scratch_dir = await render_with_input_gone(seaweedfs, tmp_path, delete_the_object)

    assert last.WhichOneof("event") == "failed", last
    assert last.failed.message == (f"spec.source.transcode.input_path: file not found: '{CLIP}'"), (
        last
    )
    assert sorted((scratch_dir / "inputs").rglob("*")) == []


async def test_a_store_gone_before_the_fetch_fails_the_render_saying_so(
    private_seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    last, scratch_dir = await render_with_input_gone(private_seaweedfs, tmp_path, kill_the_store)

    assert last.WhichOneof("event") == "failed", last
    # A transient failure, which the export service retries, not a verdict on the render.
    assert last.failed.code == "STORAGE_UNAVAILABLE", last
    assert "the inputs could not be fetched from the object store" in last.failed.message, last
    assert "AWS_ENDPOINT_URL" in last.failed.message, last
    assert sorted((scratch_dir / "inputs").rglob("*")) == []
