"""The gRPC RenderService and the factory that builds a server around it. Domain errors
raised by the registry become gRPC statuses in videojob.grpc_errors, not here."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from render_service.config import RenderConfig
from render_service.output_dir import remove_stale_partials
from render_service.registry import RenderRegistry
from videojob.grpc_setup import GracefulHealth, add_health_and_reflection, bind
from videojob.grpc_setup import create_server as create_grpc_server
from videojob.render.v1 import render_pb2, render_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = render_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name


def _log_sent_terminal(event: render_pb2.RenderEvent) -> None:
    if logger.isEnabledFor(logging.DEBUG) and event.WhichOneof("event") == "completed":
        logger.debug("render %s: completed sent at %.6f", event.render_id, time.time())


class RenderServicer(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, registry: RenderRegistry) -> None:
        self._registry = registry

    async def Render(
        self,
        request: render_pb2.RenderRequest,
        context: grpc.aio.ServicerContext[render_pb2.RenderRequest, render_pb2.RenderEvent],
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        events = await self._registry.submit(request.render_id, request.spec)
        async for event in events:
            yield event
            _log_sent_terminal(event)

    async def WatchRender(
        self,
        request: render_pb2.WatchRenderRequest,
        context: grpc.aio.ServicerContext[render_pb2.WatchRenderRequest, render_pb2.RenderEvent],
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        events = self._registry.watch(request.render_id, request.after_seq)
        async for event in events:
            yield event
            _log_sent_terminal(event)

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


@dataclass
class RenderServer:
    server: grpc.aio.Server
    port: int
    registry: RenderRegistry
    health: GracefulHealth

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, every active render ended with SHUTDOWN, then the server stops."""
        await self.health.enter_graceful_shutdown()
        await self.registry.shutdown()
        await self.server.stop(grace)


async def create_server(config: RenderConfig) -> RenderServer:
    """Builds, binds and starts the server (``config.listen`` port 0 picks a free port)."""
    config.output_dir.mkdir(parents=True, exist_ok=True)
    config.media_root.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_partials(config.output_dir)
    if removed:
        logger.info("removed %d stale partial file(s) from %s", removed, config.output_dir)
    server = create_grpc_server()
    registry = RenderRegistry(config)
    render_pb2_grpc.add_RenderServiceServicer_to_server(RenderServicer(registry), server)
    health_servicer = await add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, config.listen, config.tls)
    registry.start()
    await server.start()
    return RenderServer(server=server, port=port, registry=registry, health=health_servicer)
