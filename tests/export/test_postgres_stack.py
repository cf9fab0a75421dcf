"""The export service on PostgreSQL, as real processes: a real render service, the export service
started by videojob_launcher with ``--database postgresql://...``, real ffmpeg.

- the database restarted under the running service (a throwaway cluster of this test): the
  service reports the outage (UNAVAILABLE, health NOT_SERVING, logged) instead of crashing, and
  every job still ends terminal and correct;
- a job whose render stream was cut (re-attached), whose render service was killed (resubmitted)
  and which then completed has a history that reads as exactly that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from export_service.server import SERVICE_NAME
from tests.export.conftest import (
    RenderProcesses,
    assert_completed_with_valid_file,
    kill_group,
    slow_spec,
    stop_processes,
)
from tests.support.polling import wait_until
from tests.support.postgres import ThrowawayCluster, create_schema
from tests.support.processes import ServiceProcess, start_service
from tests.support.tcp_proxy import TcpProxy
from tests.support.throttle import Throttle
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc

pytestmark = pytest.mark.postgresql

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

SLOW_DURATION = slow_spec().source.test_pattern.duration_seconds


@pytest.fixture
async def cluster() -> AsyncIterator[ThrowawayCluster]:
    throwaway = ThrowawayCluster()
    try:
        await asyncio.to_thread(throwaway.init)
        await asyncio.to_thread(throwaway.start)
        yield throwaway
    finally:
        await asyncio.to_thread(throwaway.destroy)


@pytest.fixture
def export_processes() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    stop_processes(started)


def start_export_process(
    processes: list[ServiceProcess], render_addr: str, database: str
) -> ServiceProcess:
    process = start_service(
        "export_service",
        [
            "--listen", "127.0.0.1:0",
            "--render-addr", render_addr,
            "--database", database,
            "--stall-timeout", "3",
            "--backoff-initial", "0.3",
            "--backoff-max", "1.5",
            "--progress-interval", "0.2",
            "--retry-budget", "60",
        ],
    )  # fmt: skip
    processes.append(process)
    return process


async def read_history(stub: Stub, job_id: str) -> list[export_pb2.JobHistoryEntry]:
    """Every entry, a page of 20 at a time."""
    entries: list[export_pb2.JobHistoryEntry] = []
    after = 0
    while True:
        page = await stub.ListJobHistory(
            export_pb2.ListJobHistoryRequest(id=job_id, after_version=after, page_size=20)
        )
        entries += page.entries
        if not page.next_after_version:
            return entries
        after = page.next_after_version


async def get_job(stub: Stub, job_id: str) -> export_pb2.VideoJob | grpc.StatusCode:
    """The job, or the status code the service answered instead."""
    try:
        return await stub.GetExport(export_pb2.GetExportRequest(id=job_id), timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()


def assert_history_is_whole(
    entries: list[export_pb2.JobHistoryEntry], final: export_pb2.VideoJob
) -> None:
    """One entry per version up to the job's, progress never down, one terminal entry last."""
    assert [entry.version for entry in entries] == list(range(1, final.version + 1))
    progress = [entry.progress for entry in entries]
    assert progress == sorted(progress), progress
    terminal = (export_pb2.COMPLETED, export_pb2.FAILED, export_pb2.CANCELLED)
    assert [entry.status in terminal for entry in entries].count(True) == 1
    assert (entries[-1].status, entries[-1].progress) == (final.status, final.progress)
    assert all(entry.writer.startswith("export_service@") for entry in entries)
    # One replica owned the job throughout: it created it (lease epoch 1), or took it at a start.
    assert len({(entry.owner, entry.lease_epoch) for entry in entries}) == 1
    assert all(entry.HasField("owner") and entry.lease_epoch >= 1 for entry in entries)


async def test_a_database_restart_under_the_running_service(
    cluster: ThrowawayCluster,
    render_processes: RenderProcesses,
    export_processes: list[ServiceProcess],
) -> None:
    render = render_processes.start()
    export = start_export_process(export_processes, render.address, cluster.url)
    async with (
        create_channel(export.address) as channel,
        create_channel(render.address) as render_channel,
    ):
        stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        render_stub = render_pb2_grpc.RenderServiceStub(render_channel)
        with Throttle.children_of(render.pid, pause=0.1) as throttle:
            jobs = [
                await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))
                for _ in range(2)
            ]

            async def both_rendering() -> bool:
                states = [await get_job(stub, job.id) for job in jobs]
                return all(
                    isinstance(state, export_pb2.VideoJob) and state.progress > 2
                    for state in states
                )

            await wait_until(both_rendering, "both jobs to be rendering")
            await asyncio.to_thread(cluster.stop, "fast")

            async def answers_unavailable() -> bool:
                return await get_job(stub, jobs[0].id) == grpc.StatusCode.UNAVAILABLE

            await wait_until(answers_unavailable, "GetExport to answer UNAVAILABLE")

            async def not_serving() -> bool:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
                return bool(answer.status == health_pb2.HealthCheckResponse.NOT_SERVING)

            await wait_until(not_serving, "the health check to say NOT_SERVING")
            throttle.close()

        # The renders finish while the record is unreachable: their completions must wait.
        async def renders_completed() -> bool:
            for job in jobs:
                info = await render_stub.GetRender(render_pb2.GetRenderRequest(render_id=job.id))
                if info.state != render_pb2.RENDER_STATE_COMPLETED:
                    return False
            return True

        await wait_until(renders_completed, "both renders to complete during the outage")
        assert export.alive(), export.log()
        await asyncio.to_thread(cluster.start)

        async def all_terminal() -> bool:
            states = [await get_job(stub, job.id) for job in jobs]
            return all(
                isinstance(state, export_pb2.VideoJob)
                and state.status not in (export_pb2.QUEUED, export_pb2.RUNNING)
                for state in states
            )

        await wait_until(all_terminal, "every job to end after the database came back")
        for job in jobs:
            final = await stub.GetExport(export_pb2.GetExportRequest(id=job.id))
            assert_completed_with_valid_file(final, SLOW_DURATION)
            assert final.attempt == 1  # the renders were not lost, only their record delayed
            assert_history_is_whole(await read_history(stub, job.id), final)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert export.alive(), export.log()
    assert "job database is unavailable" in export.log(lines=2000)


async def test_history_of_a_reattached_resubmitted_completed_job(
    postgres_database: str,
    render_processes: RenderProcesses,
    export_processes: list[ServiceProcess],
) -> None:
    database = await create_schema(postgres_database)
    render = render_processes.start()
    proxy = await TcpProxy("127.0.0.1", render.port).start()
    try:
        export = start_export_process(export_processes, proxy.address, database)
        async with create_channel(export.address) as channel:
            stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
            with Throttle.children_of(render.pid, pause=0.1):
                job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))

                async def rendering() -> bool:
                    last = (await read_history(stub, job.id))[-1]
                    return last.stage == "Rendering" and last.progress > 5

                await wait_until(rendering, "the job to be rendering")
                before_cut = (await read_history(stub, job.id))[-1]
                assert proxy.cut() > 0

                async def reattached() -> bool:
                    # A render event applied after the cut (not the tracker's own "Waiting for a
                    # render service", which may come first and carries no new event).
                    entries = await read_history(stub, job.id)
                    return (
                        proxy.open_connections > 0
                        and entries[-1].render_seq > before_cut.render_seq
                    )

                await wait_until(reattached, "progress over a new render stream")
                after_cut = (await read_history(stub, job.id))[-1]
                assert (after_cut.attempt, after_cut.status) == (1, export_pb2.RUNNING)
                kill_group(render)  # the render service and its ffmpeg
                render_processes.start(port=render.port)

            async def finished() -> bool:
                state = await get_job(stub, job.id)
                return isinstance(state, export_pb2.VideoJob) and state.status not in (
                    export_pb2.QUEUED,
                    export_pb2.RUNNING,
                )

            await wait_until(finished, "the job to end")
            final = await stub.GetExport(export_pb2.GetExportRequest(id=job.id))
            entries = await read_history(stub, job.id)
    finally:
        await proxy.close()
    assert_completed_with_valid_file(final, SLOW_DURATION)
    assert final.attempt == 2
    assert_history_is_whole(entries, final)
    changes = [entry.change for entry in entries]
    # Created; progress of attempt 1 on either side of the cut (a re-attach is no change of
    # the job: same attempt, render seq going on); one resubmission; completed.
    assert changes[0] == "create" and changes[-1] == "complete"
    assert changes.count("begin_attempt") == 1
    resubmitted = changes.index("begin_attempt")
    assert set(changes[1:resubmitted]) == {"progress"}
    assert set(changes[resubmitted + 1 : -1]) <= {"progress"}
    first_attempt = entries[1:resubmitted]
    assert {entry.attempt for entry in first_attempt} == {1}
    assert before_cut in first_attempt and after_cut in first_attempt
    assert after_cut.render_seq > before_cut.render_seq
    seqs = [entry.render_seq for entry in first_attempt]
    assert seqs == sorted(seqs), seqs
    assert (entries[resubmitted].attempt, entries[resubmitted].render_seq) == (2, 0)
    assert {entry.attempt for entry in entries[resubmitted:]} == {2}
