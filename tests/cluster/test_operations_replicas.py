"""google.longrunning.Operations on every export replica, as real processes on the suite's
PostgreSQL with real ffmpeg: an operation started on one replica is waited for on another,
which is woken by the job's changes heard through LISTEN/NOTIFY (the batched poll is turned
down so that it cannot stand in)."""

from __future__ import annotations

from typing import Any

import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from export_service.operations import OPERATIONS_SERVICE_NAME
from tests.cluster.conftest import StackFactory
from tests.support.specs import pattern_spec
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel

pytestmark = pytest.mark.postgresql

NO_POLL = ("--change-poll-interval", "3600")


def unpacked_job(packed: Any) -> export_pb2.VideoJob:
    job = export_pb2.VideoJob()
    assert packed.Unpack(job), packed
    return job


async def test_an_operation_started_on_one_replica_is_waited_for_on_another(
    cluster: StackFactory,
) -> None:
    stack = await cluster(exports=2, export_args=NO_POLL)
    starting, waiting = stack.exports
    async with create_channel(starting.address) as first, create_channel(waiting.address) as other:
        for channel in (first, other):
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=OPERATIONS_SERVICE_NAME), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        started = await export_pb2_grpc.ExportServiceStub(first).StartExport(
            export_pb2.CreateExportRequest(spec=pattern_spec(2.0)), timeout=30
        )
        operations: Any = operations_pb2_grpc.OperationsStub(other)
        request = operations_pb2.WaitOperationRequest(
            name=started.name, timeout=duration_pb2.Duration(seconds=600)
        )
        waited = await operations.WaitOperation(request, timeout=120)
        got = await operations_pb2_grpc.OperationsStub(first).GetOperation(
            operations_pb2.GetOperationRequest(name=started.name), timeout=10
        )

    assert waited.done and unpacked_job(waited.response).status == export_pb2.COMPLETED
    assert got == waited
