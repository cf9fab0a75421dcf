"""The gRPC RenderService and the factory that builds a server around it. Domain errors
raised by the registry become gRPC statuses in videojob.grpc_errors, not here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from render_service.config import RenderConfig
from render_service.instance import InstanceLock, claim_instance
from render_service.output_dir import remove_stale_partials
from render_service.output_store import OutputStore
from render_service.own_scratch import OwnScratch, make_own_scratch, remove_abandoned_beside
from render_service.registry import RenderRegistry
from render_service.render_job import JOINS_FOLDER
from render_service.stored_inputs import INPUTS_FOLDER, StoredInputs
from videojob import stamps
from videojob.grpc_setup import GracefulHealth, add_health_and_reflection, bind
from videojob.grpc_setup import create_server as create_grpc_server
from videojob.render.v1 import render_pb2, render_pb2_grpc
from videojob.storage.health import FollowedStore, follow_stores
from videojob.storage.location import S3Location
from videojob.storage.settings import StoreSettings

if TYPE_CHECKING:
    from videojob.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

SERVICE_NAME = render_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name


def _stamp_sent(event: render_pb2.RenderEvent) -> None:
    if stamps.enabled:
        stamps.stamp(f"render.sent.{event.WhichOneof('event')}", event.render_id, event.seq)


class RenderServicer(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, registry: RenderRegistry) -> None:
        self._registry = registry

    async def Render(
        self,
        request: render_pb2.RenderRequest,
        context: grpc.aio.ServicerContext[render_pb2.RenderRequest, render_pb2.RenderEvent],
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        stamps.stamp("render.submit", request.render_id)
        events = await self._registry.submit(request.render_id, request.spec)
        async for event in events:
            _stamp_sent(event)
            yield event

    async def WatchRender(
        self,
        request: render_pb2.WatchRenderRequest,
        context: grpc.aio.ServicerContext[render_pb2.WatchRenderRequest, render_pb2.RenderEvent],
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        events = self._registry.watch(request.render_id, request.after_seq)
        async for event in events:
            _stamp_sent(event)
            yield event

    async def GetRender(
        self,
        request: render_pb2.GetRenderRequest,
        context: grpc.aio.ServicerContext[render_pb2.GetRenderRequest, render_pb2.RenderInfo],
    ) -> render_pb2.RenderInfo:
        return self._registry.get(request.render_id).info()

    async def CancelRender(
        self,
        request: render_pb2.CancelRenderRequest,
        context: grpc.aio.ServicerContext[render_pb2.CancelRenderRequest, render_pb2.RenderInfo],
    ) -> render_pb2.RenderInfo:
        return await self._registry.cancel(request.render_id)

    async def GetCapacity(
        self,
        request: render_pb2.GetCapacityRequest,
        context: grpc.aio.ServicerContext[render_pb2.GetCapacityRequest, render_pb2.Capacity],
    ) -> render_pb2.Capacity:
        return self._registry.capacity()

    async def CheckInputs(
        self,
        request: render_pb2.CheckInputsRequest,
        context: grpc.aio.ServicerContext[
            render_pb2.CheckInputsRequest, render_pb2.CheckInputsResponse
        ],
    ) -> render_pb2.CheckInputsResponse:
        facts = await self._registry.check_inputs(request.spec)
        return facts.message()


@dataclass
class RenderServer:
    server: grpc.aio.Server
    port: int
    registry: RenderRegistry
    health: GracefulHealth
    instance: InstanceLock
    # What the server holds open besides itself (the object stores' connections).
    resources: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    # A scratch directory this server made for itself (no --scratch-dir): removed at stop.
    own_scratch: OwnScratch | None = None
    # The task that keeps the health following the object stores of the outputs and inputs.
    store_follower: asyncio.Task[None] | None = None

    @property
    def instance_id(self) -> str:
        return self.instance.instance_id

    async def drain(self, within: float, cut_short: asyncio.Event | None = None) -> None:
        """New renders refused (UNAVAILABLE, reason DRAINING), health NOT_SERVING, queued renders
        handed back; returns once the running ones have finished, or after ``within`` seconds,
        or once ``cut_short`` is set. Every call but a new Render is still answered; ``stop``
        then fails what is left with SHUTDOWN."""
        self.registry.refuse_new()
        await self.health.enter_graceful_shutdown()
        handed_back = await self.registry.hand_back_queued()
        running = len(self.registry.active_records())
        logger.info(
            "draining: %d queued render(s) handed back, waiting up to %g s for %d running",
            handed_back,
            within,
            running,
        )
        waits: set[asyncio.Task[object]] = {asyncio.create_task(self.registry.wait_idle())}
        if cut_short is not None:
            waits.add(asyncio.create_task(cut_short.wait()))
        try:
            await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.wait(waits)
        left = len(self.registry.active_records())
        if left:
            logger.info("drain over with %d render(s) still running", left)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, every active render ended with SHUTDOWN, then the server stops."""
        await self.health.enter_graceful_shutdown()
        await self.registry.shutdown()
        await self.server.stop(grace)
        self.instance.release()
        if self.store_follower is not None:
            self.store_follower.cancel()
            await asyncio.wait({self.store_follower})
        await self.resources.aclose()
        if self.own_scratch is not None:
            await asyncio.to_thread(self.own_scratch.remove)


async def create_server(config: RenderConfig) -> RenderServer:
    """Builds, binds and starts the server (``config.listen`` port 0 picks a free port). Bound
    first: a generated instance id is keyed by the bound address. An object store as the output
    directory or the media root is checked first (see ``_checked_store``); with either, files
    are worked on in the scratch directory (``--scratch-dir``, else a fresh one removed at
    stop, or at the next start of a render service on this machine when this one is killed:
    render_service.own_scratch)."""
    own_scratch: OwnScratch | None = None
    scratch_dir = config.scratch_dir
    if scratch_dir is None:
        own_scratch = await asyncio.to_thread(make_own_scratch)
        scratch_dir = own_scratch.path
        config = replace(config, scratch_dir=scratch_dir)
    try:
        async with contextlib.AsyncExitStack() as resources:
            render_server = await _create_server(config, scratch_dir, resources)
            render_server.own_scratch = own_scratch
            render_server.resources = resources.pop_all()
    except BaseException:
        if own_scratch is not None:
            await asyncio.to_thread(own_scratch.remove)
        raise
    if own_scratch is not None:
        await asyncio.to_thread(remove_abandoned_beside, own_scratch)
    return render_server


async def _create_server(
    config: RenderConfig, scratch_dir: Path, resources: contextlib.AsyncExitStack
) -> RenderServer:
    await asyncio.to_thread(scratch_dir.mkdir, parents=True, exist_ok=True)
    # What joins of a previous run of this service left behind (the directory is its own).
    await asyncio.to_thread(shutil.rmtree, scratch_dir / JOINS_FOLDER, ignore_errors=True)
    output_store: OutputStore | None = None
    output_location = config.output_store
    if output_location is not None:
        config = replace(config, output_dir=scratch_dir)
        store = await _checked_store(config, output_location, "--output-dir", resources)
        output_store = OutputStore(store, output_location)
    stored_inputs: StoredInputs | None = None
    inputs_store: ObjectStore | None = None
    media_store = config.media_store
    if media_store is not None:
        config = replace(config, media_root=scratch_dir / INPUTS_FOLDER)
        # Inputs a previous run of this service left behind (the directory is its own).
        await asyncio.to_thread(shutil.rmtree, config.media_root, ignore_errors=True)
        inputs_store = await _checked_store(config, media_store, "--media-root", resources)
        stored_inputs = StoredInputs(inputs_store, media_store, scratch_dir)
        logger.info("inputs from %s", media_store)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    config.media_root.mkdir(parents=True, exist_ok=True)
    server = create_grpc_server()
    port = bind(server, config.listen, config.tls)
    host = config.listen.rsplit(":", 1)[0]
    try:
        instance = await asyncio.to_thread(
            claim_instance, config.output_dir, config.instance_id, host, port
        )
    except (ValueError, OSError):
        await server.stop(None)
        raise
    config = replace(config, instance_id=instance.instance_id)
    removed = await asyncio.to_thread(remove_stale_partials, config.output_dir, config.instance_id)
    if removed:
        logger.info("removed %d stale partial file(s) from %s", removed, config.output_dir)
    registry = RenderRegistry(config, output_store, stored_inputs)
    render_pb2_grpc.add_RenderServiceServicer_to_server(RenderServicer(registry), server)
    health_servicer = await add_health_and_reflection(server, [SERVICE_NAME])
    registry.start()
    followed: list[FollowedStore] = []
    if output_store is not None:
        followed.append(FollowedStore(output_store.store, output_store.location, "--output-dir"))
    if inputs_store is not None and media_store is not None:
        followed.append(FollowedStore(inputs_store, media_store, "--media-root"))
    store_follower = None
    if followed:
        store_follower = asyncio.create_task(
            follow_stores(followed, health_servicer, ["", SERVICE_NAME])
        )
    await server.start()
    if output_store is None:
        logger.info("instance %s, output directory %s", config.instance_id, config.output_dir)
    else:
        logger.info(
            "instance %s, output directory %s, scratch directory %s",
            config.instance_id,
            output_store.location,
            config.output_dir,
        )
    return RenderServer(
        server=server,
        port=port,
        registry=registry,
        health=health_servicer,
        instance=instance,
        store_follower=store_follower,
    )


async def _checked_store(
    config: RenderConfig, location: S3Location, flag: str, resources: contextlib.AsyncExitStack
) -> ObjectStore:
    """The object store of ``location`` (the value of ``flag``), open until the server stops,
    once it answered that the location is there and usable with these credentials; else
    ObjectStoreMisconfigured or ObjectStoreUnavailable, the one-line refusal naming what to
    fix."""
    settings = config.store_settings or StoreSettings.from_environ()
    from videojob.storage.object_store import ObjectStore  # aiobotocore: only when used

    store = await resources.enter_async_context(ObjectStore(settings))
    await store.check(location, flag=flag)
    return store
