"""Whether a render service answers (any one of a pool), under its own health service name.

The export service keeps accepting jobs while no render service answers (their trackers wait),
so this never changes the health of ``""`` or of the ExportService: it is reported as
``videojob.export.v1.ExportService/render`` (SERVING while the render service's health check
answers SERVING) and as the ``videojob_render_service_up`` gauge."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from export_service.background import BackgroundLoop
from videojob import metrics

logger = logging.getLogger(__name__)

CHECK_INTERVAL_SECONDS = 2.0
CHECK_TIMEOUT_SECONDS = 1.0

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def render_health_name(export_service_name: str) -> str:
    return f"{export_service_name}/render"


class RenderHealthReporter:
    def __init__(
        self,
        channel: grpc.aio.Channel | Callable[[], Sequence[grpc.aio.Channel]],
        health: health_aio.HealthServicer,
        name: str,
        interval: float = CHECK_INTERVAL_SECONDS,
    ) -> None:
        # The render services to ask (a pool's members may change between checks).
        self._channels: Callable[[], Sequence[grpc.aio.Channel]] = (
            channel if callable(channel) else lambda: (channel,)
        )
        self._health = health
        self._name = name
        self._interval = interval
        self._up: bool | None = None
        self._loop = BackgroundLoop("render-health", self._run)

    @property
    def up(self) -> bool | None:
        """The last answer (None before the first check)."""
        return self._up

    async def check(self) -> bool:
        """SERVING while at least one render service answers SERVING."""
        answers = await asyncio.gather(*(_serving(channel) for channel in self._channels()))
        up = any(answers)
        if up != self._up:
            if self._up is not None:
                logger.warning("the render service %s", "answers again" if up else "is unreachable")
            self._up = up
            metrics.RENDER_SERVICE_UP.set(1 if up else 0)
            await self._health.set(self._name, _SERVING if up else _NOT_SERVING)
        return up

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()


async def _serving(channel: grpc.aio.Channel) -> bool:
    try:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=CHECK_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(answer.status == _SERVING)
