"""A job whose owning export replica stops driving it says so on every other replica, derived
when the job is read and never written, as real processes on the suite's PostgreSQL: two
replicas, real ffmpeg, a gateway that reaches the job through the replica that does not own it.

The owner is SIGSTOPped mid-render (its ffmpeg held still meanwhile): once its heartbeat is
overdue, and before its lease lapses (nobody takes the job over), the other replica's GetExport
and the gateway's GET show "Waiting for its export replica" with no ETA, at the version the
owner last wrote, and the page's event stream sends the job again, same version; nothing is
written meanwhile (the owner and its lease epoch stay in the row). SIGCONT: the owner renews,
the job shows what its owner wrote again, and it completes on its first attempt, written by its
owner alone. The database is read directly: what happened, not what a replica says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from tests.cluster.conftest import TERMINAL, Replica, StackFactory
from tests.gateway.conftest import start_gateway
from tests.support.polling import wait_until
from tests.support.processes import child_pids
from tests.support.specs import pattern_spec
from tests.support.throttle import Throttle
from videojob.export.v1 import export_pb2
from videojob.limits import STAGE_WAITING_FOR_OWNER
from videojob.sse_client import aframes
from videojob_launcher import ServiceProcess

pytestmark = [pytest.mark.postgresql, pytest.mark.serial]

OpenReplica = Callable[[ServiceProcess], Replica]
# Long enough that the other replica sees the owner's heartbeat overdue (a third of it, the
# time between its own reads of the heartbeats, and a tenth: about 18 s) well before it lapses.
LEASE_TTL = 24.0
POLL_SECONDS = 0.1


async def until(
    read: Callable[[], Awaitable[export_pb2.VideoJob]],
    wanted: Callable[[export_pb2.VideoJob], bool],
) -> export_pb2.VideoJob:
    """Reads the job until it is as wanted (bounded by the suite's test timeout)."""
    while True:
        job = await read()
        if wanted(job):
            return job
        await asyncio.sleep(POLL_SECONDS)


async def owner_row(database: str, job_id: str) -> asyncpg.Record:
    """The job's row with its owner's heartbeat, as the database sees it now."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database)
    try:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT j.version, j.owner, j.lease_epoch, j.stage, r.expires_at > now() AS live "
            "FROM jobs j LEFT JOIN export_replicas r ON r.id = j.owner WHERE j.id = $1",
            job_id,
        )
    finally:
        await conn.close()
    assert row is not None
    return row


def pid_of(replica_id: str) -> int:
    """The pid in a replica id (``host:pid:random``)."""
    return int(replica_id.split(":")[1])


async def read_page_stream(url: str, into: list[dict[str, Any]]) -> None:
    """The page's event stream (GET /api/events), every job it sends, until cancelled."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=None) as http,
        http.stream("GET", "/api/events", params={"limit": "20"}) as response,
    ):
        assert response.status_code == 200
        async for frame in aframes(response.aiter_lines()):
            if frame.is_event and frame.name == "job":
                into.append(json.loads(frame.text))


@contextlib.asynccontextmanager
async def gateway_to(replica: ServiceProcess) -> AsyncIterator[ServiceProcess]:
    gateway = await asyncio.to_thread(start_gateway, replica.address)
    try:
        yield gateway
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_a_paused_owner_shows_on_the_other_replica_until_it_drives_the_job_again(
    cluster: StackFactory, replicas: OpenReplica, schema: str
) -> None:
    stack = await cluster(exports=2, export_args=("--lease-ttl", str(LEASE_TTL)))
    owner_process, other_process = stack.exports
    owner, other = replicas(owner_process), replicas(other_process)
    page: list[dict[str, Any]] = []
    async with (
        gateway_to(other_process) as gateway,
        httpx.AsyncClient(base_url=f"http://{gateway.address}", timeout=30) as http,
    ):
        created = await owner.stub.CreateExport(
            export_pb2.CreateExportRequest(
                request_id="paused-owner", spec=pattern_spec(60.0, width=320, height=240, fps=25)
            ),
            timeout=10,
        )

        def get() -> Awaitable[export_pb2.VideoJob]:
            return other.get(created.id)

        def rendering(job: export_pb2.VideoJob) -> bool:
            assert job.status not in TERMINAL, job
            return job.status == export_pb2.RUNNING and job.progress > 0

        stream = asyncio.create_task(read_page_stream(f"http://{gateway.address}", page))
        try:
            with Throttle.children_of(stack.render.pid, pause=0.2) as throttle:
                await until(get, rendering)
                # The render neither ends nor runs while its owner is away.
                throttle.freeze()
                assert child_pids(stack.render.pid), "no ffmpeg under the render service"
                owner_process.pause()
                try:
                    shown = await until(get, lambda job: job.awaiting_owner)
                    row = await owner_row(schema, created.id)
                    answered = (await http.get(f"/api/jobs/{created.id}")).json()
                    await wait_until(
                        lambda: waiting_on_the_page(page, shown), "the page's stream", math.inf
                    )
                finally:
                    owner_process.resume()
                    # What the page was sent while the owner was paused.
                    sent_while_paused = len(page)
                # Before the lease lapsed: still the owner's job, its record as it left it.
                assert row["live"] and row["lease_epoch"] == 1, dict(row)
                assert pid_of(row["owner"]) == owner_process.pid, dict(row)
                assert (shown.stage, shown.eta_seconds, shown.status) == (
                    STAGE_WAITING_FOR_OWNER,
                    0,
                    export_pb2.RUNNING,
                )
                assert shown.version == row["version"] and row["stage"] != shown.stage
                assert (answered["awaitingOwner"], answered["stage"]) == (
                    True,
                    STAGE_WAITING_FOR_OWNER,
                ), answered
                assert answered["etaSeconds"] is None and answered["version"] == shown.version
                back = await until(get, lambda job: not job.awaiting_owner)
                assert back.stage != STAGE_WAITING_FOR_OWNER and back.version >= shown.version
                await wait_until(
                    lambda: back_on_the_page(page, shown, sent_while_paused), "the page", math.inf
                )
            final = await until(get, lambda job: job.status in TERMINAL)
        finally:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream
    assert final.status == export_pb2.COMPLETED and final.attempt == 1, final
    row = await owner_row(schema, created.id)
    assert (pid_of(row["owner"]), row["lease_epoch"]) == (owner_process.pid, 1), dict(row)
    history = await other.history(created.id)
    assert all(entry.writer.endswith(f":{owner_process.pid}") for entry in history)
    assert all(entry.stage != STAGE_WAITING_FOR_OWNER for entry in history)


def waiting_on_the_page(page: list[dict[str, Any]], shown: export_pb2.VideoJob) -> bool:
    """The page's stream sent the job again, waiting for its replica, at the version it had
    (never an older version than one it sent before)."""
    jobs = [job for job in page if job["id"] == shown.id]
    versions = [job["version"] for job in jobs]
    assert versions == sorted(versions), versions
    waits = [job for job in jobs if job["awaitingOwner"]]
    assert all(job["version"] == shown.version for job in waits), jobs
    assert all(job["stage"] == STAGE_WAITING_FOR_OWNER for job in waits), jobs
    assert all(job["etaSeconds"] is None for job in waits), jobs
    return bool(waits)


def back_on_the_page(
    page: list[dict[str, Any]], shown: export_pb2.VideoJob, sent_while_paused: int
) -> bool:
    """After that, the job not waiting any more (that version again, or a later one). Until
    the other replica reads the owner's heartbeat again, a version the resumed owner wrote may
    still be sent as waiting: what the job shows is derived from the heartbeat as that replica
    last saw it (VideoJob.awaiting_owner)."""
    assert waiting_on_the_page(page[:sent_while_paused], shown)
    jobs = [job for job in page if job["id"] == shown.id]
    versions = [job["version"] for job in jobs]
    assert versions == sorted(versions), versions
    for job in jobs:
        if job["awaitingOwner"]:
            assert job["version"] >= shown.version, jobs
            assert (job["stage"], job["etaSeconds"]) == (STAGE_WAITING_FOR_OWNER, None), jobs
    first_wait = next(i for i, job in enumerate(jobs) if job["awaitingOwner"])
    return any(not job["awaitingOwner"] for job in jobs[first_wait + 1 :])
