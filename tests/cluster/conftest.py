"""Several export replicas on one PostgreSQL schema of the suite's database, as real processes
(videojob_launcher): a real render service with ffmpeg, N export services, optionally a gateway
given every export address."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from export_service.store.notifications import LISTENER_APPLICATION_NAME
from tests.support.postgres import create_schema
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob_launcher import Role, ServiceProcess, Stack, StackConfig

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

TERMINAL = (export_pb2.COMPLETED, export_pb2.FAILED, export_pb2.CANCELLED)
EXPORT_TEST_ARGS = (
    "--stall-timeout", "5",
    "--backoff-initial", "0.3",
    "--backoff-max", "1.5",
    "--progress-interval", "0.2",
)  # fmt: skip
GATEWAY_TEST_ARGS = ("--heartbeat-seconds", "0.5", "--upstream-retry-seconds", "30")


@pytest.fixture
async def schema(postgres_database: str) -> str:
    """A fresh schema: no other test's jobs in it."""
    return await create_schema(postgres_database)


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def cluster(tmp_path: Path, schema: str) -> AsyncIterator[StackFactory]:
    """``await cluster(exports=2, gateways=0, export_args=())`` starts a stack on ``schema``;
    every stack started is stopped at the end."""
    started: list[Stack] = []

    async def start(
        exports: int = 2, gateways: int = 0, export_args: tuple[str, ...] = ()
    ) -> Stack:
        config = StackConfig(
            tmp_path / f"stack-{len(started)}",
            database=schema,
            export=Role(count=exports, args=(*EXPORT_TEST_ARGS, *export_args)),
            gateway=Role(count=gateways, args=GATEWAY_TEST_ARGS),
        )
        stack = Stack(config)
        started.append(stack)
        await stack.astart()
        return stack

    yield start
    for stack in started:
        await stack.astop()


class Replica:
    """A gRPC client of one export replica."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        self.channel = create_channel(process.address)
        self.stub: Stub = export_pb2_grpc.ExportServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close(None)

    async def get(self, job_id: str) -> export_pb2.VideoJob:
        return await self.stub.GetExport(export_pb2.GetExportRequest(id=job_id), timeout=10)

    async def watch(self, job_id: str, into: list[export_pb2.VideoJob]) -> None:
        """Every update the replica streams, until the terminal one."""
        call = self.stub.WatchExport(export_pb2.WatchExportRequest(id=job_id))
        async for job in call:
            into.append(job)
            if job.status in TERMINAL:
                return

    async def history(self, job_id: str) -> list[export_pb2.JobHistoryEntry]:
        entries: list[export_pb2.JobHistoryEntry] = []
        after = 0
        while True:
            page = await self.stub.ListJobHistory(
                export_pb2.ListJobHistoryRequest(id=job_id, after_version=after, page_size=100)
            )
            entries += page.entries
            if not page.next_after_version:
                return entries
            after = page.next_after_version


@pytest.fixture
async def replicas() -> AsyncIterator[Callable[[ServiceProcess], Replica]]:
    opened: list[Replica] = []

    def open_replica(process: ServiceProcess) -> Replica:
        replica = Replica(process)
        opened.append(replica)
        return replica

    yield open_replica
    for replica in opened:
        await replica.close()


async def listener_pids(database_url: str) -> set[int]:
    """The change listeners' server processes in the database of ``database_url``."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = current_database()",
            LISTENER_APPLICATION_NAME,
        )
        return {row["pid"] for row in rows}
    finally:
        await conn.close()


async def terminate_listeners(database_url: str) -> int:
    """Kills every change listener's connection from the database side; how many."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        killed: int = await conn.fetchval(
            "SELECT count(*) FROM ("
            "  SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            "  WHERE application_name = $1 AND datname = current_database()) AS killed",
            LISTENER_APPLICATION_NAME,
        )
        return killed
    finally:
        await conn.close()
