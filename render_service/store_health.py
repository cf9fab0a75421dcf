"""The render service's health follows the object store of its inputs (``--media-root
s3://...``), as the export service's follows its job database: NOT_SERVING while the store does
not answer (a render could not fetch its inputs), SERVING again once it does. A draining or
stopping service stays NOT_SERVING (the health servicer ignores changes from then on)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from videojob.grpc_setup import GracefulHealth
from videojob.storage.location import S3Location
from videojob.storage.readiness import store_problem

if TYPE_CHECKING:
    from videojob.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

# How often the store is asked.
STORE_CHECK_INTERVAL_SECONDS: Final = 2.0


async def follow_store(
    store: ObjectStore,
    location: S3Location,
    health: GracefulHealth,
    service_names: Iterable[str],
    interval: float = STORE_CHECK_INTERVAL_SECONDS,
) -> None:
    """Runs until cancelled: asks the store every ``interval`` seconds and sets the health of
    ``service_names`` (and of the server, "") when its answer changes."""
    if not isinstance(health, health_aio.HealthServicer):
        return
    names = ["", *service_names]
    answered = True
    while True:
        await asyncio.sleep(interval)
        problem = await store_problem(store, location, flag="--media-root")
        if (problem is None) == answered:
            continue
        answered = problem is None
        if answered:
            logger.info("the object store of the inputs answers again: SERVING")
            status = health_pb2.HealthCheckResponse.SERVING
        else:
            logger.warning("the object store of the inputs does not answer: %s", problem)
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in names:
            await health.set(name, status)
