"""The orphan sweep over a local output directory (``--render-output-dir DIR``), with a real
render service process (real ffmpeg), the export service in process on a real SQLite store:

- a completed split job whose owner never removed its part files (it died between saving the
  completion and the removal: here its removal is stopped) has them removed by the sweep,
  counted as ``output_file``; the job's output stays;
- a stray attempt's file of that completed job, put back later, goes too, while a running
  job's files (its render's partial file, files named after its renders) and files that name
  no render (the users') stay;
- one pass of the sweep over a directory against the records as they are: what a deleted,
  failed or never created job left goes; a queued job's files, a symlink, a subfolder's files
  stay; a directory that cannot be listed ends nothing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from export_service.orphan_sweep import OrphanSweeper
from export_service.store import JobStore, open_store
from export_service.store.records import Job, RenderAttempt, render_id_for
from export_service.tracking.split_runner import SplitTracker
from tests.export.conftest import (
    FAST_TRACKER,
    TERMINAL,
    RenderProcesses,
    StartExport,
    assert_completed_with_valid_file,
    slow_spec,
    wait_for,
)
from tests.support.postgres import create_schema
from tests.support.specs import pattern_spec
from tests.support.throttle import Throttle
from videojob import metrics
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

SWEEP_SECONDS = 0.2


def removed_files() -> float:
    value = metrics.EXPORT.get_sample_value(
        "videojob_orphans_removed_total", {"kind": "output_file"}
    )
    assert value is not None
    return value


async def wait_status(stub: Stub, job_id: str, wanted: tuple[int, ...]) -> export_pb2.VideoJob:
    seen: list[export_pb2.VideoJob] = []

    async def reached() -> bool:
        seen.append(await stub.GetExport(export_pb2.GetExportRequest(id=job_id)))
        return seen[-1].status in wanted

    await wait_for(reached, within=120)
    return seen[-1]


def files_of(output: Path, job_id: str) -> set[str]:
    return {path.name for path in output.iterdir() if job_id in path.name}


async def test_a_completed_split_job_s_parts_left_behind_are_swept_and_live_files_stay(
    render_processes: RenderProcesses,
    start_export: StartExport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def owner_died_before_removing(self: SplitTracker, job: Job) -> None:
        """The owner saved the completion, then died: nothing of it removes the parts."""

    monkeypatch.setattr(SplitTracker, "_remove_part_outputs", owner_died_before_removing)
    render = render_processes.start_with("--instance-id", "sweep-a")
    output = render_processes.dirs.output
    # Files that name no render: the users', a folder of another tool's.
    users = [output / "notes.txt", output / "clip.mp4"]
    for path in users:
        path.write_bytes(b"mine")
    (output / ".cache").mkdir()
    (output / ".cache" / f"{uuid.uuid4().hex}.mp4").write_bytes(b"mine")
    server = await start_export(
        render.address,
        tracker=dataclasses.replace(FAST_TRACKER, retry_budget=60.0),
        render_output_dir=output,
        orphan_sweep_interval=SWEEP_SECONDS,
    )
    removed_before = removed_files()
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        spec = pattern_spec(3.0, width=160, height=120, fps=10.0)
        spec.output.split.parts = 3
        split = await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec))
        done = await wait_status(stub, split.id, TERMINAL)
        assert_completed_with_valid_file(done, 3.0)
        parts = [part for part in done.parts if not part.join]
        assert len(parts) >= 3
        final = Path(done.output_path)

        async def only_the_output_left() -> bool:
            return files_of(output, split.id) == {final.name}

        await wait_for(only_the_output_left, within=60)
        # The sweep removed them (each part's file, the audio's): they were there to remove.
        assert removed_files() - removed_before >= len(parts)

        # A job that runs (its ffmpeg at a ninth of its speed: it outlasts what follows).
        with Throttle.children_of(render.pid, pause=0.2):
            running = await stub.CreateExport(export_pb2.CreateExportRequest(spec=slow_spec()))

            async def rendering() -> bool:
                return any(name.startswith(".sweep-a.") for name in files_of(output, running.id))

            await wait_for(rendering, within=60)
            live = {f"{running.id}-p1.mp4", f"{running.id}-a2.mp4"}
            for name in live:
                (output / name).write_bytes(b"live")
            # A stray attempt of the completed job, put back (a release lost with its owner).
            stray = output / f"{split.id}-a2{final.suffix}"
            shutil.copyfile(final, stray)
            removed_before = removed_files()

            async def stray_gone() -> bool:
                return not stray.exists()

            await wait_for(stray_gone, within=30)
            assert removed_files() - removed_before == 1
            # A pass that listed the stray listed the running job's files too: they stayed.
            now = await stub.GetExport(export_pb2.GetExportRequest(id=running.id))
            assert now.status == export_pb2.RUNNING, now
            left = files_of(output, running.id)
            assert live <= left
            assert any(name.startswith(".sweep-a.") for name in left), left
        assert_left_alone(output, final, split.id, users)


def assert_left_alone(output: Path, final: Path, job_id: str, users: list[Path]) -> None:
    """The completed job's output and what names no render are still there."""
    assert final.is_file() and files_of(output, job_id) == {final.name}
    assert all(path.read_bytes() == b"mine" for path in users)
    assert len(list((output / ".cache").iterdir())) == 1


async def placed_job(jobs: JobStore) -> str:
    job_id = uuid.uuid4().hex
    await jobs.create(job_id=job_id, request_id=f"req-{job_id}", spec=b"spec")
    placed = RenderAttempt(
        1, render_id_for(job_id, 1), "render-1", "127.0.0.1:1", datetime.now(UTC)
    )
    await jobs.place_attempt(job_id, placed=placed, superseded_outcome="superseded")
    return job_id


def put_files(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_bytes(b"x")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    ]
)
async def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = await create_schema(request.getfixturevalue("postgres_database"))
    store = await open_store(url, "sweep-test")
    yield store
    await store.close()


async def test_one_pass_over_a_directory_judges_each_file_by_its_job_s_record(
    jobs: JobStore, tmp_path: Path
) -> None:
    output = tmp_path / "renders"
    output.mkdir()
    queued = uuid.uuid4().hex
    await jobs.create(job_id=queued, request_id=f"req-{queued}", spec=b"spec")
    running = await placed_job(jobs)
    failed = await placed_job(jobs)
    await jobs.fail(failed, code="VERIFICATION_FAILED", message="bad")
    deleted = await placed_job(jobs)
    await jobs.fail(deleted, code="VERIFICATION_FAILED", message="bad")
    await jobs.delete(deleted)
    unknown = uuid.uuid4().hex
    gone = {f"{failed}.mp4", f"{failed}-a2.webm", f"{deleted}.mp4", f"{unknown}-p1.mp4"}
    live = {f"{queued}.mp4", f"{running}.mp4", f"{running}-a2.mp4"}
    put_files(output, *gone, *live, "notes.txt", f".render-1.{failed}.partial.mp4")
    os.symlink(output / "notes.txt", output / f"{uuid.uuid4().hex}.mp4")
    (output / "sub").mkdir()
    put_files(output / "sub", f"{failed}.mp4")
    left_alone = set(os.listdir(output)) - gone
    sweeper = OrphanSweeper(jobs, None, outputs=None, media=None, interval=60, local_outputs=output)
    removed_before = removed_files()
    assert await sweeper.sweep_once() == {"output_file": len(gone)}
    assert removed_files() - removed_before == len(gone)
    assert set(os.listdir(output)) == left_alone
    assert live <= left_alone and os.listdir(output / "sub") == [f"{failed}.mp4"]
    missing = OrphanSweeper(
        jobs, None, outputs=None, media=None, interval=60, local_outputs=tmp_path / "none"
    )
    assert await missing.sweep_once() == {}
