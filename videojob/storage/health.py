"""A service's gRPC health following the object stores it depends on: NOT_SERVING while one of
them does not answer for its location, SERVING again once every one does. The render service
follows the stores of its outputs and its inputs on its whole health (a render could not store
its output or fetch its inputs); the export service follows the store of the render services'
outputs on a name of its own (it checks and removes objects, and answers for jobs meanwhile). A
draining or stopping service stays NOT_SERVING (the health servicer ignores changes from then
on)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from videojob.grpc_setup import GracefulHealth
from videojob.storage.location import S3Location
from videojob.storage.readiness import store_problem

if TYPE_CHECKING:
    from videojob.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

# How often the stores are asked.
STORE_CHECK_INTERVAL_SECONDS: Final = 2.0


@dataclass(frozen=True)
class FollowedStore:
    """A location the service depends on, the store it is in, and the flag that names it."""

    store: ObjectStore
    location: S3Location
    flag: str


async def first_problem(stores: Sequence[FollowedStore]) -> str | None:
    """None when every store answers for its location, else the first one's problem."""
    problems = await asyncio.gather(
        *(store_problem(each.store, each.location, flag=each.flag) for each in stores)
    )
    return next((problem for problem in problems if problem is not None), None)


async def follow_stores(
    stores: Sequence[FollowedStore],
    health: GracefulHealth,
    names: Sequence[str],
    interval: float = STORE_CHECK_INTERVAL_SECONDS,
) -> None:
    """Runs until cancelled: asks the stores every ``interval`` seconds and sets the health of
    ``names`` ("" for the server's) when their answer changes (they answered at the start)."""
    if not isinstance(health, health_aio.HealthServicer):
        return
    answered = True
    while True:
        await asyncio.sleep(interval)
        problem = await first_problem(stores)
        if (problem is None) == answered:
            continue
        answered = problem is None
        if answered:
            logger.info("the object store answers again: SERVING")
            status = health_pb2.HealthCheckResponse.SERVING
        else:
            logger.warning("the object store does not answer: %s", problem)
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in names:
            await health.set(name, status)
