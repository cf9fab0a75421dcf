"""The render service's health follows its object stores (``--media-root s3://...`` for its
inputs, ``--output-dir s3://...`` for its outputs), as the export service's follows its job
database: NOT_SERVING while a store does not answer (a render could not fetch its inputs or
store its output), SERVING again once every one does. A draining or stopping service stays
NOT_SERVING (the health servicer ignores changes from then on)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
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


async def follow_store(
    stores: Sequence[FollowedStore],
    health: GracefulHealth,
    service_names: Iterable[str],
    interval: float = STORE_CHECK_INTERVAL_SECONDS,
) -> None:
    """Runs until cancelled: asks the stores every ``interval`` seconds and sets the health of
    ``service_names`` (and of the server, "") when their answer changes."""
    if not isinstance(health, health_aio.HealthServicer):
        return
    names = ["", *service_names]
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
