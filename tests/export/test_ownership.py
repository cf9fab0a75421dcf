"""Several export replicas on one PostgreSQL database, as real processes (videojob_launcher), with a
real render service and real ffmpeg: each job owned by one replica at a time, fenced.

- the owner SIGKILLed: another replica takes the job once the heartbeat expires and re-attaches
  to the running render: completed, attempt 1, no resubmission;
- the owner SIGSTOPped past its lease: another takes the job (owner and epoch change in the
  database); resumed, the old owner tries a write, the database refuses it (the replica records
  its refused writes with its heartbeat), and no write of the old epoch lands after the new one
  began;
- the owner SIGTERMed: it hands the job back and another takes it long before any lease could
  expire, attempt unchanged;
- the same request id sent to two replicas at once: one job.

Each test has a schema of its own, so no replica claims another test's jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from tests.export.conftest import (
    RenderProcesses,
    assert_completed_with_valid_file,
    kill_group,
    slow_spec,
    stop_processes,
)
from tests.support.polling import wait_until
from tests.support.postgres import create_schema
from tests.support.processes import ServiceProcess, start_service
from tests.support.throttle import Throttle
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel

pytestmark = [pytest.mark.postgresql, pytest.mark.serial]

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

SLOW_DURATION = slow_spec().source.test_pattern.duration_seconds
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


@dataclass
class Replicas:
    render_addr: str
    database: str
    started: list[ServiceProcess]

    def start(self, lease_ttl: float) -> ServiceProcess:
        process = start_service(
            "export_service",
            [
                "--listen", "127.0.0.1:0",
                "--render-addr", self.render_addr,
                "--database", self.database,
                "--lease-ttl", str(lease_ttl),
                "--stall-timeout", "3",
                "--backoff-initial", "0.3",
                "--backoff-max", "1.5",
                "--progress-interval", "0.2",
            ],
        )  # fmt: skip
        self.started.append(process)
        return process

    def owning(self, owner: str) -> ServiceProcess:
        """The replica whose id is ``owner`` (``host:pid:random``)."""
        pid = int(owner.split(":")[-2])
        (process,) = [process for process in self.started if process.pid == pid]
        return process


@pytest.fixture
async def database(postgres_database: str) -> str:
    return await create_schema(postgres_database)


@pytest.fixture
def replicas(render_processes: RenderProcesses, database: str) -> Iterator[Replicas]:
    render = render_processes.start()
    started: list[ServiceProcess] = []
    yield Replicas(render.address, database, started)
    for process in started:  # a paused replica would never die of SIGKILL's siblings
        process.resume()
    stop_processes(started)


@pytest.fixture
async def db(database: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


async def job_row(db: asyncpg.Connection[Any], job_id: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT status, owner, lease_epoch, attempt FROM jobs WHERE id = $1", job_id
    )
    assert row is not None
    return row


async def history(db: asyncpg.Connection[Any], job_id: str) -> list[asyncpg.Record]:
    return list(
        await db.fetch(
            "SELECT version, change, attempt, owner, lease_epoch FROM job_history "
            "WHERE job_id = $1 ORDER BY version",
            job_id,
        )
    )


async def create(stub: Stub, request_id: str = "") -> export_pb2.VideoJob:
    request = export_pb2.CreateExportRequest(request_id=request_id, spec=slow_spec())
    return await stub.CreateExport(request, timeout=30)


async def wait_rendering(db: asyncpg.Connection[Any], job_id: str) -> None:
    async def rendering() -> bool:
        entries = await history(db, job_id)
        return any(entry["change"] == "progress" for entry in entries[-1:])

    await wait_until(rendering, "the job to report render progress")


async def wait_new_owner(db: asyncpg.Connection[Any], job_id: str, old: str) -> asyncpg.Record:
    async def moved() -> bool:
        row = await job_row(db, job_id)
        return row["owner"] is not None and row["owner"] != old

    await wait_until(moved, f"another replica than {old} to own the job")
    return await job_row(db, job_id)


async def wait_terminal(db: asyncpg.Connection[Any], job_id: str) -> None:
    async def finished() -> bool:
        return (await job_row(db, job_id))["status"] in TERMINAL

    await wait_until(finished, "the job to end", within=120)


def assert_one_render(entries: list[asyncpg.Record]) -> None:
    """Attempt 1 throughout: the render was never resubmitted (a re-attach writes nothing)."""
    assert [entry["change"] for entry in entries].count("begin_attempt") == 0
    assert {entry["attempt"] for entry in entries} == {1}


async def test_a_killed_owner_s_job_is_taken_over_without_a_second_render(
    replicas: Replicas, db: asyncpg.Connection[Any], render_processes: RenderProcesses
) -> None:
    first = replicas.start(lease_ttl=2)
    for _ in range(2):
        replicas.start(lease_ttl=2)
    render_pid = render_processes.started[0].pid
    async with create_channel(first.address) as channel:
        stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
        with Throttle.children_of(render_pid, pause=0.1):
            job = await create(stub)
            owner = (await job_row(db, job.id))["owner"]
            assert replicas.owning(owner) is first  # the replica that accepted it owns it
            await wait_rendering(db, job.id)
            kill_group(first)
            taken = await wait_new_owner(db, job.id, owner)
            assert taken["lease_epoch"] == 2
    await wait_terminal(db, job.id)
    others = [process for process in replicas.started if process is not first]
    async with create_channel(others[0].address) as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        final = await stub.GetExport(export_pb2.GetExportRequest(id=job.id))
    assert_completed_with_valid_file(final, SLOW_DURATION)
    assert final.attempt == 1
    entries = await history(db, job.id)
    assert_one_render(entries)
    assert entries[-1]["owner"] == taken["owner"] and entries[-1]["lease_epoch"] == 2


async def test_a_paused_owner_s_writes_are_refused_after_another_took_the_job(
    replicas: Replicas, db: asyncpg.Connection[Any], render_processes: RenderProcesses
) -> None:
    first = replicas.start(lease_ttl=2)
    replicas.start(lease_ttl=2)
    render_pid = render_processes.started[0].pid
    async with create_channel(first.address) as channel:
        stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
        with Throttle.children_of(render_pid, pause=0.1):
            job = await create(stub)
            old_owner = (await job_row(db, job.id))["owner"]
            await wait_rendering(db, job.id)
            first.pause()
            try:
                taken = await wait_new_owner(db, job.id, old_owner)
                assert taken["lease_epoch"] == 2

                async def new_owner_writes() -> bool:
                    entries = await history(db, job.id)
                    return any(entry["lease_epoch"] == 2 for entry in entries)

                await wait_until(new_owner_writes, "the new owner to write progress")
            finally:
                first.resume()

            async def old_owner_refused() -> bool:
                refused = await db.fetchval(
                    "SELECT refused_writes FROM export_replicas WHERE id = $1", old_owner
                )
                return refused is not None and refused >= 1

            await wait_until(old_owner_refused, "the resumed replica to report a refused write")
    await wait_terminal(db, job.id)
    assert first.alive(), first.log()
    entries = await history(db, job.id)
    old = [entry["version"] for entry in entries if entry["lease_epoch"] == 1]
    new = [entry["version"] for entry in entries if entry["lease_epoch"] == 2]
    assert old and new and max(old) < min(new), [tuple(entry) for entry in entries]
    assert all(entry["owner"] == old_owner for entry in entries if entry["lease_epoch"] == 1)
    assert all(entry["owner"] == taken["owner"] for entry in entries if entry["lease_epoch"] == 2)
    assert_one_render(entries)
    final = await job_row(db, job.id)
    assert (final["status"], final["attempt"]) == ("COMPLETED", 1)


async def test_a_stopping_owner_hands_its_job_over_at_once(
    replicas: Replicas, db: asyncpg.Connection[Any], render_processes: RenderProcesses
) -> None:
    # A lease far longer than the wait below: only a hand-back can move the job in time.
    first = replicas.start(lease_ttl=120)
    replicas.start(lease_ttl=120)
    render_pid = render_processes.started[0].pid
    async with create_channel(first.address) as channel:
        stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
        with Throttle.children_of(render_pid, pause=0.1):
            job = await create(stub)
            old_owner = (await job_row(db, job.id))["owner"]
            await wait_rendering(db, job.id)
            assert await first.astop() is not None

            async def handed_over() -> bool:
                row = await job_row(db, job.id)
                return row["owner"] not in (None, old_owner)

            await wait_until(handed_over, "another replica to take the job", within=20)
            taken = await job_row(db, job.id)
            assert (taken["lease_epoch"], taken["attempt"]) == (2, 1)
            gone = await db.fetchval(
                "SELECT count(*) FROM export_replicas WHERE id = $1", old_owner
            )
            assert gone == 0
    await wait_terminal(db, job.id)
    final = await job_row(db, job.id)
    assert (final["status"], final["attempt"]) == ("COMPLETED", 1)
    assert_one_render(await history(db, job.id))


async def test_the_same_request_id_at_two_replicas_at_once_creates_one_job(
    replicas: Replicas, db: asyncpg.Connection[Any]
) -> None:
    first, second = replicas.start(lease_ttl=5), replicas.start(lease_ttl=5)
    async with (
        create_channel(first.address) as channel_1,
        create_channel(second.address) as channel_2,
    ):
        stubs = [export_pb2_grpc.ExportServiceStub(c) for c in (channel_1, channel_2)]
        answers = await asyncio.gather(*(create(stub, "one-request") for stub in stubs))
        assert answers[0].id == answers[1].id
        assert await db.fetchval("SELECT count(*) FROM jobs") == 1
        row = await job_row(db, answers[0].id)
        assert row["lease_epoch"] == 1
        await stubs[1].CancelExport(export_pb2.CancelExportRequest(id=answers[0].id))
    await wait_terminal(db, answers[0].id)
