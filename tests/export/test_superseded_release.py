"""A superseded render whose render service has moved (nothing listens at its old address any
more: the render services were restarted on other ports): its release is asked again only for
--release-budget seconds, then given up, noted on the job's attempt and counted, and neither a
new start of the export service on the same database nor the clean-up of the cancelled job asks
that address again.

Real parts: a render service process (the job's current attempt renders there with real
ffmpeg), the export service in process on a real SQLite file, started twice; the old address is
a port where nothing listens. Waits are on state (the job's record, the supervisor's releases,
the metric), never on a log line.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from export_service.config import ExportConfig
from export_service.server import ExportServer, create_server
from export_service.store import Job, open_store
from export_service.store.base import RELEASE_GIVEN_UP_NOTE, RenderAttempt, render_id_for
from tests.export.conftest import FAST_TRACKER, RenderProcesses, wait_for
from tests.support.ports import unused_address
from tests.support.processes import ServiceProcess
from tests.support.specs import pattern_spec
from tests.support.throttle import Throttle
from videojob import metrics
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel

# Small enough for a test; the backoff between tries (0.3 s to 1.5 s) still makes a few of them.
RELEASE_TRACKER = dataclasses.replace(FAST_TRACKER, release_budget=1.0)
JOB = "moved-job"
LIVE = "live-b"
GONE = "gone-a"


def given_up() -> float:
    return metrics.EXPORT.get_sample_value("videojob_render_releases_given_up_total") or 0.0


def placed(attempt: int, instance_id: str, address: str) -> RenderAttempt:
    return RenderAttempt(
        attempt=attempt,
        render_id=render_id_for(JOB, attempt),
        instance_id=instance_id,
        address=address,
        started_at=datetime.now(UTC),
    )


async def left_by_an_earlier_run(database: str, dead: str, live: ServiceProcess) -> None:
    """The job as the run before left it: attempt 1 placed on a render service that has since
    moved (``dead``), attempt 2 placed on ``live``, where it renders when tracked."""
    store = await open_store(database)
    try:
        # Long enough to outlast both starts of the export service (it is cancelled at the end).
        spec = pattern_spec(600.0, width=320, height=240, fps=25.0)
        await store.create(
            job_id=JOB,
            request_id=JOB,
            spec=spec.SerializeToString(),
            placement=placed(1, GONE, dead),
        )
        await store.begin_attempt(JOB, expected_attempt=1)
        await store.place_attempt(
            JOB, placed=placed(2, LIVE, live.address), superseded_outcome="superseded by attempt 2"
        )
    finally:
        await store.close()


@dataclasses.dataclass
class Exports:
    """Starts the export service in process on one SQLite file; each start is stopped once,
    by the test or at teardown."""

    database: str
    running: list[ExportServer] = dataclasses.field(default_factory=list)

    async def start(self, render_addr: str) -> ExportServer:
        config = ExportConfig(
            listen="127.0.0.1:0",
            render_addr=render_addr,
            database=self.database,
            tracker=RELEASE_TRACKER,
            watch_poll_interval=1.0,
        )
        server = await create_server(config, await open_store(self.database))
        self.running.append(server)
        return server

    async def stop(self, server: ExportServer) -> None:
        self.running.remove(server)
        await server.stop(0)


@pytest.fixture
async def exports(tmp_path: Path) -> AsyncIterator[Exports]:
    started = Exports(f"sqlite:///{tmp_path / 'export.db'}")
    yield started
    for server in list(started.running):
        await started.stop(server)


async def job_of(server: ExportServer) -> Job:
    return await server.store.get(JOB)


async def test_a_release_at_a_moved_render_service_is_given_up_once_and_never_asked_again(
    render_processes: RenderProcesses,
    exports: Exports,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="export_service.tracking.supervisor")
    live = render_processes.start_with("--instance-id", LIVE)
    dead = unused_address()
    await left_by_an_earlier_run(exports.database, dead, live)
    given_up_before = given_up()
    with Throttle.children_of(live.pid, pause=0.1):
        first = await exports.start(live.address)

        async def release_noted() -> bool:
            return (await job_of(first)).attempts[0].release_given_up_at is not None

        await wait_for(release_noted)

        async def release_ended() -> bool:
            return not first.supervisor.releasing

        await wait_for(release_ended)
        assert given_up() == given_up_before + 1
        noted = await job_of(first)
        assert not noted.terminal and noted.attempt == 2
        assert noted.attempts[1].release_given_up_at is None
        # Visible through the API, beside why the attempt ended.
        async with create_channel(f"127.0.0.1:{first.port}") as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)
            shown = await stub.GetExport(export_pb2.GetExportRequest(id=JOB))
        assert shown.attempts[0].outcome == f"superseded by attempt 2; {RELEASE_GIVEN_UP_NOTE}"
        assert shown.attempts[1].outcome == ""
        # Warned of at most twice (the first failure, the give-up), not at every try: the
        # tries in between are at debug.
        about_dead = [record for record in caplog.records if dead in record.getMessage()]
        warnings = [
            record.getMessage() for record in about_dead if record.levelno >= logging.WARNING
        ]
        assert 1 <= len(warnings) <= 2 and "gave up" in warnings[-1], warnings

        # A new start on the same database: the job is tracked again, its given-up release
        # is not.
        await exports.stop(first)
        caplog.clear()
        second = await exports.start(live.address)

        async def job_read_again() -> bool:
            return second.supervisor.activity["JobRead"] >= 1 and JOB in second.supervisor.tracked

        await wait_for(job_read_again)
        # The tracker's read of the job would have started the release before JobRead (and
        # a release there only ends by giving up again, counted).
        assert not second.supervisor.releasing
        assert given_up() == given_up_before + 1

        # Cancelled: the clean-up releases the current render, not the given-up one.
        async with create_channel(f"127.0.0.1:{second.port}") as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)
            cancelled = await stub.CancelExport(export_pb2.CancelExportRequest(id=JOB))
        assert cancelled.status == export_pb2.CANCELLED

        async def cleaned_up() -> bool:
            return not (await job_of(second)).cancel_requested

        await wait_for(cleaned_up)
        assert not second.supervisor.releasing
        assert given_up() == given_up_before + 1
        assert [record for record in caplog.records if dead in record.getMessage()] == []
        final = await job_of(second)
        assert final.attempts[0].release_given_up_at == noted.attempts[0].release_given_up_at


async def test_a_cancelled_job_s_release_given_up_leaves_the_job_as_it_was(
    render_processes: RenderProcesses, exports: Exports
) -> None:
    """The clean-up of a cancelled job releases its superseded attempts too: one at a moved
    render service is given up and noted, the job staying CANCELLED at the same version."""
    live = render_processes.start_with("--instance-id", LIVE)
    dead = unused_address()
    await left_by_an_earlier_run(exports.database, dead, live)
    store = await open_store(exports.database)
    try:
        cancelled = await store.cancel(JOB)
    finally:
        await store.close()
    given_up_before = given_up()
    server = await exports.start(live.address)

    async def release_noted_and_cleaned_up() -> bool:
        job = await job_of(server)
        return job.attempts[0].release_given_up_at is not None and not job.cancel_requested

    await wait_for(release_noted_and_cleaned_up)

    async def release_ended() -> bool:
        return not server.supervisor.releasing

    await wait_for(release_ended)
    assert given_up() == given_up_before + 1
    job = await job_of(server)
    assert (job.status, job.version, job.finished_at) == (
        cancelled.status,
        cancelled.version,
        cancelled.finished_at,
    )
    assert [entry.version for entry in await server.store.history(JOB)] == list(
        range(1, cancelled.version + 1)
    )
