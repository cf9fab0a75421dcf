"""A waiting job's place in its render service's line and its estimated start, over gRPC: a real
render service process with one render slot (its ffmpeg at playback speed, so a long render
holds the slot at next to no CPU cost), the export service in-process.

- with one render running and none completed there yet: the first job behind it is position 1
  and starts when the running render's ETA says; the second is position 2 with no estimate
  (nothing completed there to say how long the first will take); the running job has none;
- the line moves without a new version: the job ahead cancelled, the second becomes position 1;
- once a job completed there, a job with another ahead of it is estimated the mean run time
  after the one ahead; ListExports and WatchExport show the same places;
- a split job's renders waiting there (a part, the audio) stand ahead of a job placed after
  them, and the part that renders holds the slot; the split job cancelled, that job starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.export.conftest import StartExport, stop_processes
from tests.gateway.realtime_stack import write_realtime_ffmpeg
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess, start_service
from tests.support.render_dirs import RenderDirs
from tests.support.specs import pattern_spec
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import spec_pb2

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub


# Ten minutes at playback speed: it holds the slot until the test cancels it.
LONG = pattern_spec(600.0, fps=5.0)
SHORT = pattern_spec(1.0)


@pytest.fixture
def one_slot_render(render_dirs: RenderDirs, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = start_service(
        "render_service",
        [
            "--listen",
            "127.0.0.1:0",
            "--output-dir",
            str(render_dirs.output),
            "--media-root",
            str(render_dirs.media),
            "--max-concurrent",
            "1",
        ],
        env={"FFMPEG_BINARY": str(write_realtime_ffmpeg(tmp_path))},
    )
    yield process
    stop_processes([process])


@pytest.fixture
async def stub(start_export: StartExport, one_slot_render: ServiceProcess) -> AsyncIterator[Stub]:
    server = await start_export(one_slot_render.address)
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        yield export_pb2_grpc.ExportServiceStub(channel)


async def create(stub: Stub, spec: spec_pb2.RenderSpec) -> export_pb2.VideoJob:
    return await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec))


async def get(stub: Stub, job_id: str) -> export_pb2.VideoJob:
    return await stub.GetExport(export_pb2.GetExportRequest(id=job_id))


async def read_until(
    stub: Stub, job_id: str, wanted: Callable[[export_pb2.VideoJob], bool], what: str
) -> export_pb2.VideoJob:
    seen: list[export_pb2.VideoJob] = []

    async def reached() -> bool:
        seen.append(await get(stub, job_id))
        return wanted(seen[-1])

    await wait_until(reached, f"job {job_id} {what}", within=60)
    return seen[-1]


def rendering_with_eta(job: export_pb2.VideoJob) -> bool:
    return job.status == export_pb2.RUNNING and job.eta_seconds > 0


async def cancel(stub: Stub, *jobs: export_pb2.VideoJob) -> None:
    for job in jobs:
        await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))


def position_is(position: int) -> Callable[[export_pb2.VideoJob], bool]:
    return lambda job: job.queue_position == position


async def test_the_line_behind_a_running_render_with_nothing_completed_yet(stub: Stub) -> None:
    running = await create(stub, LONG)
    await read_until(stub, running.id, rendering_with_eta, "rendering with an ETA")
    first = await create(stub, LONG)
    second = await create(stub, LONG)
    try:
        shown = await get(stub, first.id)
        assert shown.status == export_pb2.QUEUED
        assert shown.queue_position == 1
        assert shown.HasField("estimated_start_at")
        # When the running render's ETA says it ends: after the job was created.
        assert shown.estimated_start_at.ToDatetime() >= shown.created_at.ToDatetime()

        # Its render service's first word (its render queued) is the job's version 2.
        waiting = await read_until(stub, second.id, lambda job: job.version >= 2, "heard of")
        assert waiting.queue_position == 2
        assert not waiting.HasField("estimated_start_at"), "nothing completed there to go by"

        now_running = await get(stub, running.id)
        assert now_running.queue_position == 0
        assert not now_running.HasField("estimated_start_at")

        listed = await stub.ListExports(export_pb2.ListExportsRequest(page_size=10))
        places = {job.id: job.queue_position for job in listed.jobs}
        assert places == {running.id: 0, first.id: 1, second.id: 2}

        # The line moves, the record does not: the same version, a new place.
        await cancel(stub, first)
        moved = await read_until(stub, second.id, position_is(1), "to be first in line")
        assert moved.version == waiting.version
        assert moved.HasField("estimated_start_at")
    finally:
        await cancel(stub, running, first, second)


async def test_a_job_behind_another_starts_a_mean_run_time_after_it(stub: Stub) -> None:
    done = await create(stub, SHORT)
    completed = await read_until(
        stub, done.id, lambda job: job.status == export_pb2.COMPLETED, "to complete"
    )
    run_time = completed.finished_at.ToDatetime() - completed.started_at.ToDatetime()

    running = await create(stub, LONG)
    await read_until(stub, running.id, rendering_with_eta, "rendering with an ETA")
    first = await create(stub, LONG)
    second = await create(stub, LONG)
    try:
        listed = await stub.ListExports(
            export_pb2.ListExportsRequest(page_size=10, status=export_pb2.QUEUED)
        )
        by_id = {job.id: job for job in listed.jobs}
        assert [by_id[first.id].queue_position, by_id[second.id].queue_position] == [1, 2]
        first_start = by_id[first.id].estimated_start_at.ToDatetime()
        second_start = by_id[second.id].estimated_start_at.ToDatetime()
        # Read from one view, each rounded to the second.
        assert abs((second_start - first_start) - run_time) <= timedelta(seconds=1)

        # A watch sends the same place with the state.
        watch = stub.WatchExport(export_pb2.WatchExportRequest(id=second.id))
        sent = await anext(aiter(watch))
        watch.cancel()
        assert sent.queue_position == 2 and sent.HasField("estimated_start_at")
    finally:
        await cancel(stub, running, first, second)


async def placed_with_one_started(stub: Stub, job_id: str) -> list[export_pb2.JobPart]:
    """The split job's renders beside the join (its two parts and the audio) once all are
    placed and the first of them to take the one slot is recorded as started (whichever it
    is: they are placed at once)."""

    async def reached() -> bool:
        job = await get(stub, job_id)
        if not all(part.render_id for part in job.parts if not part.join):
            return False
        request = export_pb2.ListJobHistoryRequest(id=job_id, page_size=1000)
        history = await stub.ListJobHistory(request)
        return [entry.change for entry in history.entries].count("part_started") == 1

    await wait_until(reached, f"job {job_id}'s renders placed and one started", within=60)
    return [part for part in (await get(stub, job_id)).parts if not part.join]


async def test_a_split_jobs_renders_waiting_there_stand_ahead_of_a_job_placed_after_them(
    stub: Stub,
) -> None:
    spec = spec_pb2.RenderSpec()
    spec.CopyFrom(LONG)
    spec.output.split.parts = 2
    split = await create(stub, spec)
    renders = await placed_with_one_started(stub, split.id)
    assert [(part.index, part.audio) for part in renders] == [(0, False), (1, False), (2, True)]
    assert sorted(part.state for part in renders) == ["queued", "queued", "rendering"]
    behind = await create(stub, LONG)
    try:
        # Its render service's first word (its render queued) is the job's version 2.
        waiting = await read_until(stub, behind.id, lambda job: job.version >= 2, "heard of")
        assert waiting.status == export_pb2.QUEUED
        # The two renders of the split job that wait for the one slot are ahead of it.
        assert waiting.queue_position == 3
        assert not waiting.HasField("estimated_start_at"), "a part holds the slot"
        assert (await get(stub, split.id)).queue_position == 0

        await cancel(stub, split)
        started = await read_until(
            stub, behind.id, lambda job: job.status == export_pb2.RUNNING, "to take the slot"
        )
        assert started.queue_position == 0
    finally:
        await cancel(stub, split, behind)
