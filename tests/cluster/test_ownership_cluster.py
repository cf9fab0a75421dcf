"""Every job owned by one export replica at a time (design invariants 8-9), as real processes on
the suite's PostgreSQL:

- three replicas started together on 200 jobs queued while none ran: each job is claimed once
  (lease epoch 1, one owner in its whole history), the synthetic render server starts one render
  per job (its render log), and every job completes;
- a graceful restart of every replica in turn (SIGTERM, its exit, a new start) while jobs render
  on the synthetic server: each stopped replica's jobs are handed back and taken by the others,
  and every job still completes at attempt 1 with one render;
- a cancel sent to a replica that does not own the job, whose owner was SIGKILLed mid-render
  (real ffmpeg): the cancel is recorded at once, and the render is stopped, leaving no file,
  by that replica before it answers (invariant 6 holds whoever owns the job); the release is
  recorded only by an owner, after a fenced write: the replica that takes the job over when
  the dead owner's lease expires.

The jobs' owners and epochs are read from the database itself, the renders from the synthetic
server's render log: what happened, not what a replica says happened.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.stack import SYNTHETIC_RENDER_MODULE
from export_service.store.factory import open_store
from tests.cluster.conftest import EXPORT_TEST_ARGS, Replica, StackFactory
from tests.support.polling import wait_until
from tests.support.processes import child_pids
from tests.support.specs import pattern_spec
from tests.support.throttle import Throttle
from videojob.endpoints import EXPORT_SERVICE
from videojob.export.v1 import export_pb2
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc
from videojob.spec_validation import normalize_spec
from videojob_launcher import Role, ServiceProcess, Stack, StackConfig
from videojob_launcher.health import grpc_serving
from videojob_launcher.process import ProcessSpec
from videojob_launcher.stack import export_args

pytestmark = [pytest.mark.postgresql, pytest.mark.serial]

OpenReplica = Callable[[ServiceProcess], Replica]
ACTIVE = ("QUEUED", "RUNNING")
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
FINISH_WITHIN = 240.0


class Database:
    """Reads of the jobs' rows and history straight from the schema the replicas share."""

    def __init__(self, conn: asyncpg.Connection[Any]) -> None:
        self.conn = conn

    async def statuses(self) -> dict[str, int]:
        rows = await self.conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        return {row["status"]: row["n"] for row in rows}

    async def all_terminal(self, jobs: int) -> bool:
        statuses = await self.statuses()
        return sum(statuses.get(status, 0) for status in TERMINAL) == jobs

    async def jobs(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.conn.fetch(
            "SELECT id, status, attempt, owner, lease_epoch, cancel_requested FROM jobs"
        )
        return rows

    async def active_owners(self) -> list[str | None]:
        rows = await self.conn.fetch(
            "SELECT owner FROM jobs WHERE status = ANY($1::text[])", list(ACTIVE)
        )
        return [row["owner"] for row in rows]

    async def leases_in_history(self) -> dict[str, set[tuple[str | None, int | None]]]:
        """Per job, every (owner, epoch) its history's writes after the create were made under."""
        rows = await self.conn.fetch(
            "SELECT job_id, owner, lease_epoch FROM job_history WHERE version > 1"
        )
        leases: dict[str, set[tuple[str | None, int | None]]] = {}
        for row in rows:
            leases.setdefault(row["job_id"], set()).add((row["owner"], row["lease_epoch"]))
        return leases


@pytest.fixture
async def database(schema: str) -> AsyncIterator[Database]:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(schema)
    try:
        yield Database(conn)
    finally:
        await conn.close()


def replica_of(owner: str | None, process: ServiceProcess) -> bool:
    """Whether ``owner`` (``host:pid:random``) is the current run of ``process``."""
    return owner is not None and owner.split(":")[1] == str(process.pid)


def synthetic_stack(
    workdir: Path,
    database: str,
    render_log: Path,
    render_seconds: float,
    exports: int,
    hold_file: Path | None = None,
) -> Stack:
    """A stack on the synthetic render server (each render ``render_seconds`` long, logged;
    held at its end until ``hold_file`` exists, when given)."""
    render_args: tuple[str, ...] = ("--duration", str(render_seconds), "--rate", "5")
    render_args += ("--render-log", str(render_log))
    if hold_file is not None:
        render_args += ("--hold-file", str(hold_file))
    return Stack(
        StackConfig(
            workdir,
            database=database,
            render=Role(module=SYNTHETIC_RENDER_MODULE, args=render_args),
            export=Role(count=exports, args=EXPORT_TEST_ARGS),
            gateway=Role(count=0),
            stop_grace=20.0,
        )
    )


def started_renders(render_log: Path) -> list[str]:
    return render_log.read_text().split() if render_log.exists() else []


async def queue_jobs(database: str, count: int) -> set[str]:
    """``count`` jobs inserted through the store with no owner, as a replica that stopped
    leaves them (none runs now)."""
    store = await open_store(database, writer="test:queue")
    spec = normalize_spec(pattern_spec(1.0)).SerializeToString(deterministic=True)
    try:
        created = [
            await store.create(job_id=uuid.uuid4().hex, request_id=f"queued-{i}", spec=spec)
            for i in range(count)
        ]
    finally:
        await store.close()
    return {job.id for job, _ in created}


async def start_exports_together(stack: Stack, count: int) -> None:
    """``count`` export replicas spawned at once (the launcher starts them one after another,
    each healthy before the next), all healthy before this returns."""
    probe = grpc_serving(EXPORT_SERVICE)
    for index in range(count):
        args = export_args(
            "127.0.0.1:0",
            stack.render_addr,
            stack.database,
            "--render-output-dir",
            str(stack.output_dir),
            *EXPORT_TEST_ARGS,
        )
        spec = ProcessSpec(f"export-{index + 1}", "export_service", args, {}, probe, 20.0)
        stack.exports.append(ServiceProcess(spec))
    await asyncio.gather(*(process.astart() for process in stack.exports))


async def test_three_replicas_started_together_claim_each_queued_job_once(
    tmp_path: Path, schema: str, database: Database
) -> None:
    jobs = 200
    queued = await queue_jobs(schema, jobs)
    render_log = tmp_path / "renders.log"
    stack = synthetic_stack(tmp_path / "stack", schema, render_log, 1.0, exports=0)
    try:
        await asyncio.to_thread(stack.start_renders)
        await start_exports_together(stack, 3)
        await wait_until(lambda: database.all_terminal(jobs), "every job terminal", FINISH_WITHIN)
    finally:
        await stack.astop()
    rows = await database.jobs()
    assert {row["id"] for row in rows} == queued
    assert {row["status"] for row in rows} == {"COMPLETED"}
    assert {row["attempt"] for row in rows} == {1}
    # Claimed once: the first claim makes epoch 1, any further one would raise it.
    assert {row["lease_epoch"] for row in rows} == {1}
    # Every write of each job was made by one of the replicas, under one lease.
    leases = await database.leases_in_history()
    assert set(leases) == queued
    assert all(len(held) == 1 for held in leases.values()), leases
    replica_pids = {str(process.pid) for process in stack.exports}
    owners = {owner for held in leases.values() for owner, _ in held}
    assert None not in owners
    assert {str(owner).split(":")[1] for owner in owners} <= replica_pids, owners
    # One Render per job, counted where the renders start.
    renders = started_renders(render_log)
    assert sorted(renders) == sorted(queued), (len(renders), len(set(renders)))


async def taken_by_others(database: Database, stopped: ServiceProcess, jobs: int) -> bool:
    """Whether every job is still active and owned by a replica other than ``stopped``."""
    owners = await database.active_owners()
    assert len(owners) == jobs, "a job ended while a replica restarted"
    return not any(owner is None or replica_of(owner, stopped) for owner in owners)


async def test_a_graceful_restart_of_every_replica_in_turn_loses_and_re_renders_nothing(
    tmp_path: Path, schema: str, database: Database, replicas: OpenReplica
) -> None:
    render_log = tmp_path / "renders.log"
    # Every render stays unfinished until each replica has been restarted: it completes when
    # the test lets it (the hold file), not when a guessed duration runs out.
    hold = tmp_path / "restarts-done"
    stack = synthetic_stack(tmp_path / "stack", schema, render_log, 2.0, exports=3, hold_file=hold)
    try:
        await stack.astart()
        created: set[str] = set()
        for index, process in enumerate(stack.exports):
            replica = replicas(process)
            for number in range(8):
                job = await replica.stub.CreateExport(
                    export_pb2.CreateExportRequest(
                        request_id=f"restart-{index}-{number}", spec=pattern_spec(2.0)
                    ),
                    timeout=10,
                )
                created.add(job.id)

        async def all_rendering() -> bool:
            return set(started_renders(render_log)) == created

        await wait_until(all_rendering, "every job rendering")
        for process in stack.exports:
            owners = await database.active_owners()
            # Still under load: this replica holds running jobs that it is about to hand back.
            assert any(replica_of(owner, process) for owner in owners), owners
            returncode = await process.astop()
            assert returncode is not None and returncode != -signal.SIGKILL, returncode
            await wait_until(
                functools.partial(taken_by_others, database, process, len(created)),
                f"{process.name}'s jobs taken by the others",
            )
            await process.astart()
        hold.touch()
        await wait_until(
            lambda: database.all_terminal(len(created)), "every job terminal", FINISH_WITHIN
        )
    finally:
        await stack.astop()
    rows = await database.jobs()
    assert {row["id"] for row in rows} == created
    assert {row["status"] for row in rows} == {"COMPLETED"}
    assert {row["attempt"] for row in rows} == {1}
    # Each replica's jobs changed owner when it stopped; none was rendered a second time.
    assert all(row["lease_epoch"] >= 2 for row in rows), [row["lease_epoch"] for row in rows]
    renders = started_renders(render_log)
    assert sorted(renders) == sorted(created), (len(renders), len(set(renders)))


async def rendering_job(owner: Replica, request_id: str) -> export_pb2.VideoJob:
    """A minute-long job created on ``owner``, once its render has made progress."""
    job = await owner.stub.CreateExport(
        export_pb2.CreateExportRequest(
            request_id=request_id, spec=pattern_spec(60.0, width=320, height=240, fps=25.0)
        ),
        timeout=10,
    )

    async def rendering() -> bool:
        current = await owner.get(job.id)
        assert current.status not in (export_pb2.COMPLETED, export_pb2.FAILED), current
        return current.status == export_pb2.RUNNING and current.progress > 0

    await wait_until(rendering, "the job rendering")
    return job


async def test_a_cancel_through_a_replica_that_does_not_own_the_job_after_its_owner_died(
    cluster: StackFactory, replicas: OpenReplica, database: Database
) -> None:
    stack = await cluster(exports=3, export_args=("--lease-ttl", "3"))
    owner, other = replicas(stack.exports[0]), replicas(stack.exports[1])
    job = await rendering_job(owner, "cancel-after-owner-died")
    assert child_pids(stack.render.pid), "no ffmpeg under the render service"
    # The owner dies; its render keeps going in the render service.
    await stack.exports[0].akill()
    assert child_pids(stack.render.pid), "ffmpeg stopped with the export replica"
    cancelled = await other.stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
    assert cancelled.status == export_pb2.CANCELLED
    await wait_until(lambda: not child_pids(stack.render.pid), "ffmpeg to be stopped")
    await wait_until(
        lambda: not [path for path in stack.output_dir.iterdir() if path.is_file()],
        f"no file in {stack.output_dir}",
    )

    async def released() -> bool:
        (current,) = await database.jobs()
        return not current["cancel_requested"]

    await wait_until(released, "the render's release to be recorded")
    (row,) = await database.jobs()
    assert row["status"] == "CANCELLED"
    # Taken over once by a live replica, which released the render under its new lease.
    assert row["lease_epoch"] == 2 and not replica_of(row["owner"], stack.exports[0]), row
    assert (await replicas(stack.exports[2]).get(job.id)).status == export_pb2.CANCELLED


async def test_a_cancel_stops_the_render_before_the_dead_owners_lease_ends(
    cluster: StackFactory, replicas: OpenReplica, database: Database
) -> None:
    """The replica that takes a cancel stops the render itself: with a lease far longer than
    the test, FFmpeg is gone and its partial file removed when the cancel answers, while the
    job is still the dead owner's (epoch 1, its release not recorded)."""
    stack = await cluster(exports=2, export_args=("--lease-ttl", "600"))
    owner, other = replicas(stack.exports[0]), replicas(stack.exports[1])
    job = await rendering_job(owner, "cancel-within-the-lease")
    (before,) = await database.jobs()
    await stack.exports[0].akill()
    assert child_pids(stack.render.pid), "ffmpeg stopped with the export replica"
    cancelled = await other.stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
    assert cancelled.status == export_pb2.CANCELLED
    assert not child_pids(stack.render.pid), "ffmpeg still runs after the cancel answered"
    assert not [path for path in stack.output_dir.iterdir() if path.is_file()]
    (row,) = await database.jobs()
    assert row["status"] == "CANCELLED" and row["cancel_requested"], row
    assert (row["owner"], row["lease_epoch"]) == (before["owner"], 1), row


async def test_a_cancel_through_another_replica_removes_a_render_that_finished_unrecorded(
    cluster: StackFactory, replicas: OpenReplica, database: Database
) -> None:
    """The owner dies, then its render finishes on the render service (its end recorded by
    no one); a cancel through another replica, long before the dead owner's lease ends,
    leaves no file: the cancelled job never uses it."""
    stack = await cluster(exports=2, export_args=("--lease-ttl", "600"))
    owner, other = replicas(stack.exports[0]), replicas(stack.exports[1])
    job = await owner.stub.CreateExport(
        export_pb2.CreateExportRequest(
            request_id="finished-unrecorded", spec=pattern_spec(4.0, width=160, height=120)
        ),
        timeout=10,
    )
    channel = create_channel(stack.render.address)
    try:
        render = render_pb2_grpc.RenderServiceStub(channel)

        async def render_state() -> int:
            request = render_pb2.GetRenderRequest(render_id=job.id)
            return int((await render.GetRender(request, timeout=10)).state)

        # FFmpeg at a ninth of its speed, then held, so the owner dies before the render ends.
        with Throttle.children_of(stack.render.pid, pause=0.2) as throttle:

            async def rendering() -> bool:
                current = await owner.get(job.id)
                assert current.status not in (export_pb2.COMPLETED, export_pb2.FAILED), current
                return current.status == export_pb2.RUNNING and current.progress > 0

            await wait_until(rendering, "the job rendering")
            throttle.freeze()
            await stack.exports[0].akill()

        async def finished() -> bool:
            return await render_state() == render_pb2.RENDER_STATE_COMPLETED

        await wait_until(finished, "the render finished on the render service")
        assert [path.name for path in stack.output_dir.iterdir() if job.id in path.name]
        cancelled = await other.stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
        assert cancelled.status == export_pb2.CANCELLED
        assert [path.name for path in stack.output_dir.iterdir() if job.id in path.name] == []
        (row,) = await database.jobs()
        assert (row["status"], row["lease_epoch"]) == ("CANCELLED", 1), row
    finally:
        await channel.close(None)
