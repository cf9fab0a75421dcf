"""A pool of render services behind one export service: real render service processes sharing
one output directory (each with its own --instance-id), real ffmpeg, the export service in
process with ``--render-addr a,b``.

- jobs created at once spread over the pool (the ffmpeg children of each process show it);
- a render service killed mid-render: its job completes on the other as attempt 2, with a valid
  file, and no partial file of the dead one is left;
- a render service draining (SIGTERM) finishes its running job as attempt 1 while new jobs go to
  the other;
- a render service cut off from the export service while it renders: the job moves on, and once
  it can be reached again its stale render is cancelled and its output removed;
- a full render service (RESOURCE_EXHAUSTED) with room on the other: the job starts there at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from export_service.server import ExportServer
from tests.export.conftest import (
    FAST_TRACKER,
    RenderProcesses,
    StartExport,
    assert_completed_with_valid_file,
    kill_group,
    slow_spec,
    wait_for,
)
from tests.support.processes import ServiceProcess, child_pids
from tests.support.specs import pattern_spec
from tests.support.tcp_proxy import TcpProxy
from tests.support.throttle import Throttle
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

POOL_TRACKER = dataclasses.replace(FAST_TRACKER, failover_after=3.0, retry_budget=60.0)
SLOW_DURATION = slow_spec().source.test_pattern.duration_seconds
SHORT = pattern_spec(2.0)


def start_member(processes: RenderProcesses, instance_id: str, *extra: str) -> ServiceProcess:
    return processes.start_with("--instance-id", instance_id, *extra)


@dataclasses.dataclass
class Pool:
    server: ExportServer
    stub: Stub


OpenPool = Callable[[str, Path], Awaitable[Pool]]


@pytest.fixture
async def open_pool(start_export: StartExport) -> AsyncIterator[OpenPool]:
    channels: list[grpc.aio.Channel] = []

    async def open_(render_addr: str, output_dir: Path) -> Pool:
        server = await start_export(render_addr, tracker=POOL_TRACKER, render_output_dir=output_dir)
        channel = create_channel(f"127.0.0.1:{server.port}")
        channels.append(channel)
        return Pool(server, export_pb2_grpc.ExportServiceStub(channel))

    yield open_
    for channel in channels:
        await channel.close(None)


async def get(stub: Stub, job_id: str) -> export_pb2.VideoJob:
    return await stub.GetExport(export_pb2.GetExportRequest(id=job_id))


async def create(stub: Stub, spec: spec_pb2.RenderSpec | None = None) -> export_pb2.VideoJob:
    return await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec or slow_spec()))


async def wait_placed_and_rendering(stub: Stub, job_id: str) -> export_pb2.VideoJob:
    seen: list[export_pb2.VideoJob] = []

    async def rendering() -> bool:
        job = await get(stub, job_id)
        seen.append(job)
        return bool(job.render_service.instance_id) and job.progress > 0

    await wait_for(rendering, within=60)
    return seen[-1]


async def wait_terminal(stub: Stub, job_id: str, within: float = 120) -> export_pb2.VideoJob:
    seen: list[export_pb2.VideoJob] = []

    async def terminal() -> bool:
        job = await get(stub, job_id)
        seen.append(job)
        return job.status in (export_pb2.COMPLETED, export_pb2.FAILED, export_pb2.CANCELLED)

    await wait_for(terminal, within=within)
    return seen[-1]


def partial_files(output_dir: Path, instance_id: str) -> list[Path]:
    return sorted(output_dir.glob(f".{instance_id}.*.partial.*"))


async def test_jobs_created_at_once_spread_over_the_pool(
    render_processes: RenderProcesses, open_pool: OpenPool
) -> None:
    a = start_member(render_processes, "pool-a", "--max-concurrent", "2")
    b = start_member(render_processes, "pool-b", "--max-concurrent", "2")
    pool = await open_pool(f"{a.address},{b.address}", render_processes.dirs.output)
    with Throttle.children_of(a.pid, pause=0.1), Throttle.children_of(b.pid, pause=0.1):
        jobs = await asyncio.gather(*(create(pool.stub) for _ in range(4)))
        placed = [await wait_placed_and_rendering(pool.stub, job.id) for job in jobs]

        # Each process runs ffmpeg for two of them, seen from the processes themselves.
        async def both_render_two() -> bool:
            return len(child_pids(a.pid)) == 2 and len(child_pids(b.pid)) == 2

        await wait_for(both_render_two, within=30)
    per_service = sorted(job.render_service.instance_id for job in placed)
    assert per_service == ["pool-a", "pool-a", "pool-b", "pool-b"]
    addresses = {job.render_service.instance_id: job.render_service.address for job in placed}
    assert addresses == {"pool-a": a.address, "pool-b": b.address}
    for job in placed:
        await pool.stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))


async def test_a_killed_render_service_s_job_completes_on_the_other_as_attempt_2(
    render_processes: RenderProcesses, open_pool: OpenPool
) -> None:
    a = start_member(render_processes, "kill-a")
    b = start_member(render_processes, "kill-b")
    output = render_processes.dirs.output
    pool = await open_pool(f"{a.address},{b.address}", output)
    by_instance = {"kill-a": a, "kill-b": b}
    with Throttle.children_of(a.pid, pause=0.1), Throttle.children_of(b.pid, pause=0.1):
        first, second = await asyncio.gather(create(pool.stub), create(pool.stub))
        placed = [await wait_placed_and_rendering(pool.stub, j.id) for j in (first, second)]
        victim = placed[0]
        dead_instance = victim.render_service.instance_id
        survivor = next(name for name in by_instance if name != dead_instance)
        assert partial_files(output, dead_instance), "the render was writing its partial file"
        before_kill = await get(pool.stub, victim.id)
        kill_group(by_instance[dead_instance])
        retrying: list[export_pb2.VideoJob] = []

        async def resubmitted_and_rendering() -> bool:
            job = await get(pool.stub, victim.id)
            retrying.append(job)
            return job.attempt == 2 and job.attempt_progress > 0

        await wait_for(resubmitted_and_rendering, within=30)
        # Says what happens: a retry, with the new render's own progress; the job's own
        # progress did not go back.
        shown = retrying[-1]
        assert shown.retrying and shown.render_service.instance_id == survivor
        assert shown.progress >= before_kill.progress
        assert all(job.progress >= before_kill.progress for job in retrying)
    final = await wait_terminal(pool.stub, victim.id)
    assert_completed_with_valid_file(final, SLOW_DURATION)
    assert final.attempt == 2 and final.render_service.instance_id == survivor
    assert Path(final.output_path).name == f"{victim.id}-a2.mp4"
    first_attempt, second_attempt = final.attempts
    assert first_attempt.render_service.instance_id == dead_instance
    assert first_attempt.outcome.startswith("superseded") and first_attempt.HasField("finished_at")
    assert (second_attempt.render_id, second_attempt.outcome) == (f"{victim.id}-a2", "COMPLETED")
    assert partial_files(output, dead_instance) == []
    other = await wait_terminal(pool.stub, placed[1].id)
    assert other.status == export_pb2.COMPLETED


async def test_a_draining_render_service_finishes_its_job_and_new_jobs_go_elsewhere(
    render_processes: RenderProcesses, open_pool: OpenPool
) -> None:
    a = start_member(render_processes, "drain-a", "--drain-timeout", "120")
    b = start_member(render_processes, "drain-b")
    pool = await open_pool(f"{a.address},{b.address}", render_processes.dirs.output)
    by_instance = {"drain-a": a, "drain-b": b}
    with Throttle.children_of(a.pid, pause=0.05), Throttle.children_of(b.pid, pause=0.05):
        running = await wait_placed_and_rendering(pool.stub, (await create(pool.stub)).id)
        draining_name = running.render_service.instance_id
        other_name = next(name for name in by_instance if name != draining_name)
        by_instance[draining_name].popen.send_signal(signal.SIGTERM)
        later = [await create(pool.stub, SHORT) for _ in range(3)]
        finished_later = [await wait_terminal(pool.stub, job.id) for job in later]
    for job in finished_later:
        assert job.status == export_pb2.COMPLETED and job.attempt == 1
        assert job.render_service.instance_id == other_name
    final = await wait_terminal(pool.stub, running.id)
    assert_completed_with_valid_file(final, SLOW_DURATION)
    assert final.attempt == 1 and final.render_service.instance_id == draining_name


async def test_a_stale_render_of_a_job_that_moved_on_is_cancelled_when_its_service_is_back(
    render_processes: RenderProcesses, open_pool: OpenPool
) -> None:
    a = start_member(render_processes, "stale-a")
    b = start_member(render_processes, "stale-b")
    output = render_processes.dirs.output
    host, port = a.address.rsplit(":", 1)
    proxy = await TcpProxy(host, int(port)).start()
    try:
        pool = await open_pool(f"{proxy.address},{b.address}", output)
        with Throttle.children_of(a.pid, pause=0.1), Throttle.children_of(b.pid, pause=0.1):
            jobs = await asyncio.gather(create(pool.stub), create(pool.stub))
            placed = [await wait_placed_and_rendering(pool.stub, job.id) for job in jobs]
            stale = next(job for job in placed if job.render_service.instance_id == "stale-a")
            proxy.refuse = True
            proxy.cut()

            async def moved_on() -> bool:
                job = await get(pool.stub, stale.id)
                return job.attempt == 2 and job.render_service.instance_id == "stale-b"

            await wait_for(moved_on, within=30)
            async with create_channel(a.address) as channel:
                direct = render_pb2_grpc.RenderServiceStub(channel)
                request = render_pb2.GetRenderRequest(render_id=stale.id)
                assert (await direct.GetRender(request)).state == render_pb2.RENDER_STATE_RUNNING
                before = await get(pool.stub, stale.id)
                proxy.refuse = False

                async def stale_render_cancelled() -> bool:
                    info = await direct.GetRender(request)
                    return info.state == render_pb2.RENDER_STATE_CANCELLED

                await wait_for(stale_render_cancelled, within=30)
            after = await get(pool.stub, stale.id)
            # The release touched nothing of the job: same attempt, still on stale-b.
            assert (after.attempt, after.render_service.instance_id) == (2, "stale-b")
            assert after.status in (export_pb2.RUNNING, export_pb2.COMPLETED)
            assert after.version >= before.version
        assert [p for p in partial_files(output, "stale-a") if stale.id in p.name] == []
        assert not (output / f"{stale.id}.mp4").exists()
        final = await wait_terminal(pool.stub, stale.id)
        assert_completed_with_valid_file(final, SLOW_DURATION)
        assert final.attempt == 2 and final.attempts[0].render_id == stale.id
    finally:
        await proxy.close()


async def test_a_full_render_service_sends_the_job_to_one_with_room_at_once(
    render_processes: RenderProcesses, open_pool: OpenPool
) -> None:
    full = start_member(render_processes, "full-a", "--max-concurrent", "1", "--max-queue", "0")
    roomy = start_member(render_processes, "room-b")
    pool = await open_pool(f"{full.address},{roomy.address}", render_processes.dirs.output)
    with Throttle.children_of(full.pid, pause=0.1), Throttle.children_of(roomy.pid, pause=0.1):
        async with create_channel(full.address) as channel:
            direct = render_pb2_grpc.RenderServiceStub(channel)
            occupier = direct.Render(
                render_pb2.RenderRequest(render_id="occupier", spec=slow_spec())
            )

            async def full_is_rendering() -> bool:
                return len(child_pids(full.pid)) == 1

            await wait_for(full_is_rendering)
            jobs = [await create(pool.stub, SHORT) for _ in range(3)]
            done = [await wait_terminal(pool.stub, job.id) for job in jobs]
            occupier.cancel()
            await direct.CancelRender(render_pb2.CancelRenderRequest(render_id="occupier"))
    for job in done:
        assert job.status == export_pb2.COMPLETED and job.attempt == 1
        assert job.render_service.instance_id == "room-b"
        assert [attempt.render_service.instance_id for attempt in job.attempts] == ["room-b"]
