"""videojob.grpc_setup's channel to several replicas: the target it builds from a list, and real
gRPC servers behind it: calls go only to replicas whose health says SERVING, and to the others
once one stops."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from tests.support.polling import wait_until
from videojob.grpc_setup import create_replica_channel, replica_server_name, replica_target

SERVICE = "videojob.test.Replicated"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WHO = "who"


def test_a_list_becomes_one_ipv4_target_with_names_resolved() -> None:
    assert replica_target("127.0.0.1:5000") == "127.0.0.1:5000"
    assert replica_target("dns:///export:5000") == "dns:///export:5000"
    assert replica_target("127.0.0.1:1,localhost:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert replica_target("[::1]:1, [::1]:2") == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(ValueError, match="mixes"):
        replica_target("127.0.0.1:1,[::1]:2")
    with pytest.raises(ValueError, match="HOST:PORT"):
        replica_target("127.0.0.1:1,unix:///tmp/socket")
    with pytest.raises(ValueError, match="resolve"):
        replica_target("127.0.0.1:1,no-such-host.invalid:2")
    assert replica_server_name("export-a:1,export-b:2") == "export-a"
    assert replica_server_name("127.0.0.1:1,127.0.0.1:2") == ""


class Replica:
    """A gRPC server whose health service says whether it serves SERVICE, and which one it is:
    WHO is SERVING on the first, NOT_SERVING on the second."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = grpc.aio.server()
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def start(self, serving: bool) -> None:
        await self.health.set(WHO, SERVING if self.name == "first" else NOT_SERVING)
        await self.set_serving(serving)
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        await self.health.set(SERVICE, SERVING if serving else NOT_SERVING)


@pytest.fixture
async def two_replicas() -> AsyncIterator[tuple[Replica, Replica]]:
    first, second = Replica("first"), Replica("second")
    await first.start(serving=True)
    await second.start(serving=False)
    yield first, second
    await first.server.stop(None)
    await second.server.stop(None)


async def answered_by(stub: health_pb2_grpc.HealthStub, calls: int) -> set[str]:
    """Which replicas answered ``calls`` calls ("none" for a call no replica answered)."""
    names = set()
    for _ in range(calls):
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=WHO), timeout=5)
        except grpc.aio.AioRpcError:
            names.add("none")
            continue
        names.add("first" if answer.status == SERVING else "second")
    return names


async def test_calls_go_to_serving_replicas_and_move_when_one_stops(
    two_replicas: tuple[Replica, Replica],
) -> None:
    first, second = two_replicas
    target = replica_target(f"127.0.0.1:{first.port},localhost:{second.port}")
    channel = create_replica_channel(target, SERVICE)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        # The second says NOT_SERVING: every call goes to the first.
        assert await answered_by(stub, 8) == {"first"}
        await second.set_serving(True)

        async def both_answer() -> bool:
            return await answered_by(stub, 4) == {"first", "second"}

        await wait_until(both_answer, "calls spread over both replicas")
        await first.server.stop(None)

        async def second_alone() -> bool:
            return await answered_by(stub, 4) == {"second"}

        await wait_until(second_alone, "calls going to the second replica alone")
        assert await answered_by(stub, 8) == {"second"}
    finally:
        await channel.close(None)
