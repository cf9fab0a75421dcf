"""Fixtures for the export service tests: the render service and the export service in-process on
port 0 (or as processes where kills are involved), tiny specs, file checks."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from export_service.config import ExportConfig, TrackerSettings
from export_service.server import ExportServer, create_server
from export_service.store import JobStore, open_store
from render_service.config import RenderConfig
from render_service.server import RenderServer
from render_service.server import create_server as create_render_server
from tests.support.media import media_duration
from tests.support.paced_ffmpeg import PACED_SIZE, write_paced_ffmpeg
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess, start_service
from tests.support.render_dirs import RenderDirs
from tests.support.specs import pattern_spec as pattern_spec
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import spec_pb2

TERMINAL = (export_pb2.COMPLETED, export_pb2.FAILED, export_pb2.CANCELLED)

FAST_TRACKER = TrackerSettings(
    stall_timeout=3.0,
    max_attempts=5,
    progress_interval=0.1,
    backoff_initial=0.3,
    backoff_max=1.5,
    rpc_timeout=3.0,
    retry_budget=20.0,
)


# The render services of these tests render slow_spec at this multiple of playback speed.
SLOW_SPEED = 5.0


def slow_spec() -> spec_pb2.RenderSpec:
    """A render that takes a few seconds (20 s at SLOW_SPEED), long enough to break things in the
    middle of it."""
    width, height = PACED_SIZE
    return pattern_spec(20.0, width=width, height=height)


def assert_completed_with_valid_file(job: export_pb2.VideoJob, duration: float) -> None:
    assert job.status == export_pb2.COMPLETED, job
    assert job.progress == 100 and job.stage == "Complete"
    path = Path(job.output_path)
    assert path.is_file() and path.stat().st_size > 0
    assert abs(media_duration(path) - duration) <= 0.5


def assert_monotonic(updates: list[export_pb2.VideoJob]) -> None:
    versions = [u.version for u in updates]
    assert versions == sorted(set(versions)), versions
    progress = [u.progress for u in updates]
    assert progress == sorted(progress), progress
    assert all(u.progress < 100 for u in updates if u.status != export_pb2.COMPLETED)
    assert sum(u.status in TERMINAL for u in updates) == 1
    assert updates[-1].status in TERMINAL


@pytest.fixture
def render_dirs(tmp_path: Path) -> RenderDirs:
    return RenderDirs.create(tmp_path, output_name="out")


@pytest.fixture
def paced_ffmpeg(tmp_path: Path) -> Path:
    return write_paced_ffmpeg(tmp_path, SLOW_SPEED)


@dataclass
class RenderProcesses:
    """Starts real render service processes; all are killed at teardown."""

    dirs: RenderDirs
    ffmpeg: Path
    started: list[ServiceProcess] = field(default_factory=list)

    def start(self, port: int = 0) -> ServiceProcess:
        return self.start_with(port=port)

    def start_with(self, *extra: str, port: int = 0) -> ServiceProcess:
        process = start_service(
            "render_service",
            [
                "--listen",
                f"127.0.0.1:{port}",
                "--output-dir",
                str(self.dirs.output),
                "--media-root",
                str(self.dirs.media),
                "--stall-timeout",
                "5",
                *extra,
            ],
            env={"FFMPEG_BINARY": str(self.ffmpeg)},
        )
        self.started.append(process)
        return process


def kill_group(process: ServiceProcess) -> None:
    """SIGKILL the service and every child it started (it runs in its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.kill()


def stop_processes(processes: list[ServiceProcess]) -> None:
    """SIGKILL (the whole process group: ffmpeg children too), then close each output pipe
    once its drain thread has read to the end."""
    for process in processes:
        kill_group(process)
    names = {f"drain-{process.name}" for process in processes}
    for thread in threading.enumerate():
        if thread.name in names:
            thread.join(timeout=5)
    for process in processes:
        if process.popen.stdout is not None:
            process.popen.stdout.close()


@pytest.fixture
def render_processes(render_dirs: RenderDirs, paced_ffmpeg: Path) -> Iterator[RenderProcesses]:
    processes = RenderProcesses(render_dirs, paced_ffmpeg)
    yield processes
    stop_processes(processes.started)


@dataclass
class InProcessRender:
    """A render service in the test's event loop, on a real socket (``render_processes`` starts
    one as a process, for tests that kill, stop or throttle it)."""

    server: RenderServer

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


StartRender = Callable[..., Awaitable[InProcessRender]]


@pytest.fixture
async def start_render(render_dirs: RenderDirs, paced_ffmpeg: Path) -> AsyncIterator[StartRender]:
    """Starts render services in the test's event loop on port 0, all on ``render_dirs``;
    stopped at teardown."""
    servers: list[RenderServer] = []

    async def start(instance_id: str = "") -> InProcessRender:
        config = RenderConfig(
            listen="127.0.0.1:0",
            output_dir=render_dirs.output,
            media_root=render_dirs.media,
            stall_timeout=5.0,
            ffmpeg=str(paced_ffmpeg),
            instance_id=instance_id,
        )
        server = await create_render_server(config)
        servers.append(server)
        return InProcessRender(server)

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(0)


@pytest.fixture
async def render_service(start_render: StartRender) -> InProcessRender:
    return await start_render()


StartExport = Callable[..., Awaitable[ExportServer]]


@pytest.fixture
async def start_export(tmp_path: Path) -> AsyncIterator[StartExport]:
    """Starts the export service in-process on port 0 against ``render_addr``, on a SQLite file
    of the test's (or ``given_store``)."""
    servers: list[ExportServer] = []

    async def start(
        render_addr: str, given_store: JobStore | None = None, **overrides: object
    ) -> ExportServer:
        config = ExportConfig(
            listen="127.0.0.1:0",
            render_addr=render_addr,
            database=f"sqlite:///{tmp_path / 'export.db'}",
            tracker=overrides.pop("tracker", FAST_TRACKER),  # type: ignore[arg-type]
            watch_poll_interval=overrides.pop("watch_poll_interval", 1.0),  # type: ignore[arg-type]
            **overrides,  # type: ignore[arg-type]
        )
        store = given_store or await open_store(config.database)
        server = await create_server(config, store)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(0)


@pytest.fixture
async def export_server(start_export: StartExport, render_service: InProcessRender) -> ExportServer:
    return await start_export(render_service.address)


@pytest.fixture
async def stub(
    export_server: ExportServer,
) -> AsyncIterator[export_pb2_grpc.ExportServiceAsyncStub]:
    async with create_channel(f"127.0.0.1:{export_server.port}") as channel:
        yield export_pb2_grpc.ExportServiceStub(channel)


async def watch(
    stub: export_pb2_grpc.ExportServiceAsyncStub, job_id: str, after_version: int = 0
) -> list[export_pb2.VideoJob]:
    """Every update WatchExport sends until it ends (after a terminal state)."""
    request = export_pb2.WatchExportRequest(id=job_id, after_version=after_version)
    return [job async for job in stub.WatchExport(request, timeout=90)]


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    await wait_until(predicate, getattr(predicate, "__name__", "the condition"), within)


def grpc_code(error: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> grpc.StatusCode:
    return error.value.code()
