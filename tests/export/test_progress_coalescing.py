"""Progress writes are coalesced per job (at most one per interval, measured from the end of the
previous write), while terminal events are written at once, after the newest progress.

A paced render service is scripted in-process on a real gRPC server: every committed version is
observed through the store's change listener, with the time the store wrote it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from export_service.progress_writer import ProgressWriter
from export_service.store import Job, JobStatus, ProgressResult, ProgressUpdate, StoreUnavailable
from export_service.store.base import STAGE_WAITING_FOR_RENDER
from export_service.store.sqlite import SqliteJobStore
from tests.export.conftest import FAST_TRACKER, StartExport, pattern_spec, watch
from tests.support.polling import wait_until
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class PacedRenderService(render_pb2_grpc.RenderServiceServicer):
    """Render streams ``events`` progress events ``period`` apart, then ``verdict``."""

    events: int
    period: float
    verdict: render_pb2.RenderEvent

    def percent(self, seq: int) -> float:
        return 2 + 90 * seq / self.events

    async def Render(
        self, request: render_pb2.RenderRequest, context: Context
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        for seq in range(1, self.events + 1):
            progress = render_pb2.Progress(percent=self.percent(seq), stage="Rendering")
            yield render_pb2.RenderEvent(seq=seq, progress=progress)
            await asyncio.sleep(self.period)
        yield self.verdict

    async def WatchRender(
        self, request: render_pb2.WatchRenderRequest, context: Context
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")
        yield render_pb2.RenderEvent()

    async def GetRender(
        self, request: render_pb2.GetRenderRequest, context: Context
    ) -> render_pb2.RenderInfo:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def CancelRender(
        self, request: render_pb2.CancelRenderRequest, context: Context
    ) -> render_pb2.RenderInfo:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    async def GetCapacity(
        self, request: render_pb2.GetCapacityRequest, context: Context
    ) -> render_pb2.Capacity:
        return render_pb2.Capacity(max_concurrent=1, instance_id="paced")

    async def CheckInputs(
        self, request: render_pb2.CheckInputsRequest, context: Context
    ) -> render_pb2.CheckInputsResponse:
        return render_pb2.CheckInputsResponse()


@pytest.fixture
async def paced() -> AsyncIterator[Any]:
    servers: list[grpc.aio.Server] = []

    async def start(service: PacedRenderService) -> str:
        server = grpc.aio.server()
        render_pb2_grpc.add_RenderServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(0)


def verdict(kind: str, seq: int, tmp_path: Path) -> render_pb2.RenderEvent:
    if kind == "failed":
        return render_pb2.RenderEvent(
            seq=seq, failed=render_pb2.Failed(code="FFMPEG_ERROR", message="boom")
        )
    output = tmp_path / "out.mp4"
    output.write_bytes(b"video")
    done = render_pb2.Completed(output_path=str(output), size_bytes=5, duration_seconds=2.0)
    return render_pb2.RenderEvent(seq=seq, completed=done)


async def run_recorded(
    start_export: StartExport, address: str, interval: float
) -> tuple[list[Job], list[export_pb2.VideoJob]]:
    """Every version the store commits for one job, and what its watcher saw."""
    server = await start_export(address, tracker=replace(FAST_TRACKER, progress_interval=interval))
    committed: list[Job] = []
    server.store.add_listener(committed.append)
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec(2.0)))
        seen = await watch(stub, job.id)
    return [version for version in committed if version.id == job.id], seen


async def test_progress_writes_per_job_are_bounded_by_the_interval(
    start_export: StartExport, paced: Any, tmp_path: Path
) -> None:
    interval = 0.2
    service = PacedRenderService(
        events=150, period=0.01, verdict=verdict("completed", 151, tmp_path)
    )
    versions, seen = await run_recorded(start_export, await paced(service), interval)

    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
    assert versions[-1].status is JobStatus.COMPLETED and seen[-1].status == export_pb2.COMPLETED
    progress = [v for v in versions if v.status is JobStatus.RUNNING]
    # Far fewer writes than events, each at least an interval after the previous one ended
    # (the store stamps updated_at inside the write). The completion supersedes the progress
    # still pending: it is not flushed first.
    assert 2 <= len(progress) < service.events / 3
    for earlier, later in itertools.pairwise(progress):
        assert (later.updated_at - earlier.updated_at).total_seconds() >= interval
    elapsed = (progress[-1].updated_at - versions[0].updated_at).total_seconds()
    assert len(progress) <= elapsed / interval + 1
    assert [v.progress for v in progress] == sorted(v.progress for v in progress)


@pytest.mark.parametrize("kind", ["completed", "failed"])
async def test_terminal_events_are_written_at_once_after_the_newest_progress(
    kind: str, start_export: StartExport, paced: Any, tmp_path: Path
) -> None:
    """With an interval far longer than the render, only the first progress is written by
    coalescing; the terminal event still lands at once. A failure is preceded by the newest
    progress (where the render stopped); a completion supersedes it and is not held back."""
    interval = 60.0
    service = PacedRenderService(events=20, period=0.01, verdict=verdict(kind, 21, tmp_path))
    versions, seen = await run_recorded(start_export, await paced(service), interval)

    statuses = [v.status for v in versions]
    first = versions[1]
    if kind == "failed":
        assert statuses == [
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.RUNNING,
            JobStatus.FAILED,
        ]
        newest = versions[2]
        assert first.progress < newest.progress
        assert newest.progress == pytest.approx(service.percent(service.events))
    else:
        assert statuses == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED]
        assert versions[-1].progress == 100
    written_after = (versions[-1].updated_at - first.updated_at).total_seconds()
    assert written_after < interval  # not held back until the interval allowed another write
    terminal = export_pb2.COMPLETED if kind == "completed" else export_pb2.FAILED
    assert (seen[-1].version, seen[-1].status) == (len(versions), terminal)


async def test_a_new_stage_is_written_at_once_whatever_the_interval(tmp_path: Path) -> None:
    """Within one interval only the first progress is written, unless the stage changes: a
    job shows Rendering, Finalizing and Verifying as they begin, not an interval later."""
    store = await SqliteJobStore.open(tmp_path / "jobs.db")
    written: list[tuple[str, float]] = []
    store.add_listener(lambda job: written.append((job.stage, job.progress)))

    def shows(stage: str) -> Callable[[], bool]:
        return lambda: written[-1][0] == stage

    writer = ProgressWriter(store, interval=60.0)
    writer.start()
    try:
        await store.create(job_id="job", request_id="r", spec=pattern_spec().SerializeToString())
        writer.register("job", 0.0)
        for seq, (stage, percent) in enumerate(
            [
                ("Preparing", 1.0),
                ("Rendering", 2.0),
                ("Rendering", 40.0),  # same stage within the interval: waits
                ("Finalizing", 95.0),
                ("Verifying", 99.0),
            ],
            start=1,
        ):
            writer.offer(ProgressUpdate("job", percent, stage, 0.0, seq))
            if stage != "Rendering" or percent == 2.0:
                await wait_until(shows(stage), f"{stage} written", within=10.0)
        assert written == [
            ("Queued", 0.0),
            ("Preparing", 1.0),
            ("Rendering", 2.0),
            ("Finalizing", 95.0),
            ("Verifying", 99.0),
        ]
    finally:
        await writer.stop()
        await store.close()


async def test_the_trackers_own_stage_keeps_the_newest_progress_and_has_no_eta(
    tmp_path: Path,
) -> None:
    """The tracker's own stage, "Waiting for a render service", is written at once with the
    newest progress offered (not the older one stored: the attempt's progress must not fall, or
    the store refuses it) and no ETA; it leaves a job that never started QUEUED, and the job
    says it is retrying until the render's own stage is back."""
    store = await SqliteJobStore.open(tmp_path / "jobs.db")
    written: list[Job] = []
    store.add_listener(written.append)
    writer = ProgressWriter(store, interval=60.0)
    writer.start()
    try:
        spec = pattern_spec().SerializeToString()
        await store.create(job_id="queued", request_id="q", spec=spec)
        writer.register("queued", 0.0)
        writer.offer_stage("queued", STAGE_WAITING_FOR_RENDER, None)
        await wait_until(lambda: written[-1].id == "queued" and written[-1].version == 2)
        queued = written[-1]
        assert (queued.status, queued.stage) == (JobStatus.QUEUED, "Waiting for a render service")
        assert queued.retrying and queued.started_at is None

        await store.create(job_id="job", request_id="r", spec=spec)
        writer.register("job", 0.0)
        writer.offer(ProgressUpdate("job", 2.0, "Rendering", 30.0, 1))
        await wait_until(lambda: written[-1].stage == "Rendering")
        writer.offer(ProgressUpdate("job", 40.0, "Rendering", 20.0, 2))  # waits the interval
        writer.offer_stage("job", STAGE_WAITING_FOR_RENDER, None)
        await wait_until(lambda: written[-1].stage == STAGE_WAITING_FOR_RENDER, within=10.0)
        waiting = written[-1]
        assert (waiting.status, waiting.progress, waiting.eta_seconds) == (
            JobStatus.RUNNING,
            40.0,
            0.0,
        )
        assert waiting.retrying and waiting.attempt == 1
        writer.offer(ProgressUpdate("job", 41.0, "Rendering", 19.0, 3))
        await wait_until(lambda: written[-1].stage == "Rendering", within=10.0)
        assert not written[-1].retrying
    finally:
        await writer.stop()
        await store.close()


class StallingStore(SqliteJobStore):
    """Its progress write after ``stall()`` waits for ``release`` and then fails, as when the
    database goes away mid-write."""

    stalled: asyncio.Event
    release: asyncio.Event

    def stall(self) -> None:
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()

    async def record_progress_batch(
        self, updates: Sequence[ProgressUpdate], *, urgent: bool = False
    ) -> list[ProgressResult]:
        if hasattr(self, "release") and not self.release.is_set():
            self.stalled.set()
            await self.release.wait()
            raise StoreUnavailable("the database went away")
        return await super().record_progress_batch(updates, urgent=urgent)


async def test_withdrawn_progress_never_lands_even_from_a_write_in_flight_that_failed(
    tmp_path: Path,
) -> None:
    """A split part rendered again starts from zero frames: its tracker withdraws the progress
    it offered before, and neither the pending update nor one in flight (kept for the next
    round when its write fails) is written after that."""
    store = await StallingStore.open(tmp_path / "jobs.db")
    written: list[Job] = []
    store.add_listener(written.append)
    writer = ProgressWriter(store, interval=60.0)
    writer.start()
    try:
        await store.create(job_id="job", request_id="r", spec=pattern_spec().SerializeToString())
        writer.register("job", 0.0)
        store.stall()
        writer.offer(ProgressUpdate("job", 40.0, "Rendering", 0.0, 1, split_frames=(100, 7)))
        await store.stalled.wait()
        withdrawn = asyncio.create_task(writer.withdraw("job"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not withdrawn.done()  # the write in flight is waited for
        store.release.set()
        await withdrawn
        # The failed write's update may have been written again before withdraw returned; never
        # after it.
        before = len(written)
        await writer.flush("job")  # writes whatever is pending: nothing
        assert len(written) == before
        writer.offer(ProgressUpdate("job", 41.0, "Rendering", 0.0, 2, split_frames=(0, 9)))
        await writer.flush("job")
        assert [job.split_frames for job in written[before:]] == [(0, 9)]
    finally:
        await writer.stop()
        await store.close()
