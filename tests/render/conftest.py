"""Fixtures for the render service tests: in-process servers on port 0, real processes where
signals are involved, tiny specs, and independent checks of rendered files and processes."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from render_service.config import RenderConfig
from render_service.instance import INSTANCES_DIR
from render_service.output_dir import partial_name
from render_service.server import RenderServer, create_server
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess, start_service
from tests.support.render_dirs import RenderDirs
from tests.support.specs import pattern_spec as pattern_spec
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2

if TYPE_CHECKING:
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub

TERMINAL = ("completed", "failed", "cancelled")


def long_spec() -> spec_pb2.RenderSpec:
    """A render that would run for a long time; tests stop or freeze it early."""
    return pattern_spec(3600.0, width=640, height=480, fps=25.0)


def kind(event: render_pb2.RenderEvent) -> str:
    return event.WhichOneof("event") or ""


async def collect(stream: AsyncIterable[render_pb2.RenderEvent]) -> list[render_pb2.RenderEvent]:
    return [event async for event in stream]


def run_ffmpeg(*args: str) -> None:
    subprocess.run(
        [tool_ffmpeg(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args],
        check=True,
        timeout=60,
    )


def file_size(path: Path) -> int:
    return path.stat().st_size


def partial_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.partial.*"))


def output_entries(directory: Path) -> list[Path]:
    """What the output directory holds, but the render services' own state (instance ids)."""
    return sorted(entry for entry in directory.iterdir() if entry.name != INSTANCES_DIR)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ffmpeg_pids(output_dir: Path, render_id: str) -> list[int]:
    """FFmpeg processes writing this render's partial file in this output directory (a /proc
    scan, no psutil). The directory keeps tests running side by side with the same render id
    from seeing each other's FFmpeg."""
    marker = f"{output_dir}/."
    render_marker = f".{render_id}.partial."
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmdline = _cmdline(int(entry.name))
            mine = marker in cmdline and render_marker in cmdline
            if mine and "ffmpeg" in cmdline and pid_alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


async def one_ffmpeg(output_dir: Path, render_id: str) -> int:
    """The pid of the render's one FFmpeg, from the same /proc scan that found exactly one (a
    second scan can miss it: while setpriv execs FFmpeg its command line is empty a moment)."""
    found: list[int] = []

    def exactly_one() -> bool:
        found[:] = ffmpeg_pids(output_dir, render_id)
        return len(found) == 1

    await wait_for(exactly_one)
    return found[0]


def pid_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# The kernel's PF_EXITING task flag (<linux/sched.h>), field 9 of /proc/PID/stat.
_PF_EXITING = 0x4


def kill_sent(pid: int) -> bool:
    """The process is gone, or ending: SIGKILL is pending for it (the kernel ends it once any
    disk write it is blocked in returns: a heavily loaded disk can hold a process in such a
    write for seconds), or it took the signal and is exiting (closing its files, which a loaded
    disk can make last as long), or only its zombie is left."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").strip()[:1] in ("Z", "X"):
        return True
    # The fields after the parenthesised command name start at field 3 (the state).
    if int(stat.rpartition(")")[2].split()[6]) & _PF_EXITING:
        return True
    sigkill = 1 << (signal.SIGKILL - 1)
    return any(int(fields.get(key, "0").strip(), 16) & sigkill for key in ("SigPnd", "ShdPnd"))


async def wait_for(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    await wait_until(predicate, "the condition", limit)


async def events_until(
    call: AsyncIterable[render_pb2.RenderEvent],
    predicate: Callable[[render_pb2.RenderEvent], bool],
) -> list[render_pb2.RenderEvent]:
    """Reads events up to and including the first that satisfies ``predicate``."""
    seen = []
    async for event in call:
        seen.append(event)
        if predicate(event):
            return seen
    raise AssertionError(f"stream ended before the expected event: {seen}")


def is_rendering(event: render_pb2.RenderEvent) -> bool:
    return kind(event) == "progress" and event.progress.stage == "Rendering"


@pytest.fixture
def dirs(tmp_path: Path) -> RenderDirs:
    return RenderDirs.create(tmp_path)


@pytest.fixture
def config(dirs: RenderDirs) -> RenderConfig:
    return RenderConfig(
        listen="127.0.0.1:0", output_dir=dirs.output, media_root=dirs.media, max_concurrent=2
    )


@dataclass
class Running:
    server: RenderServer
    stub: RenderServiceAsyncStub
    channel: grpc.aio.Channel
    config: RenderConfig

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def partial(self, render_id: str, container: str = "mp4") -> Path:
        """Where this service writes the render's partial file."""
        name = partial_name(self.server.instance_id, render_id, container)
        return self.config.output_dir / name


@pytest.fixture
async def render_servers() -> AsyncIterator[list[Running]]:
    servers: list[Running] = []
    yield servers
    for running in servers:
        await running.channel.close(None)
        await running.server.stop(0)


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(render_servers: list[Running]) -> StartServer:
    """``await start(config, **overrides)`` starts an in-process server on port 0."""

    async def starter(config: RenderConfig, **overrides: object) -> Running:
        effective = replace(config, **overrides)  # type: ignore[arg-type]
        server = await create_server(effective)
        channel = create_channel(f"127.0.0.1:{server.port}")
        running = Running(server, render_pb2_grpc.RenderServiceStub(channel), channel, effective)
        render_servers.append(running)
        return running

    return starter


@pytest.fixture
async def service(start: StartServer, config: RenderConfig) -> Running:
    return await start(config)


@pytest.fixture
def process_factory(dirs: RenderDirs) -> Iterator[Callable[..., ServiceProcess]]:
    """Starts ``python -m render_service`` as a real process; killed at teardown if alive."""
    started: list[ServiceProcess] = []

    def factory(*extra: str, env: dict[str, str] | None = None) -> ServiceProcess:
        args = [
            "--listen",
            "127.0.0.1:0",
            "--output-dir",
            str(dirs.output),
            "--media-root",
            str(dirs.media),
            *extra,
        ]
        process = start_service("render_service", args, env=env)
        started.append(process)
        return process

    yield factory
    for process in started:
        process.kill()
    for thread in threading.enumerate():
        if thread.name == "drain-render_service":
            thread.join(timeout=10)
    for process in started:
        if process.popen.stdout is not None:
            process.popen.stdout.close()


def render_request(render_id: str, spec: spec_pb2.RenderSpec) -> render_pb2.RenderRequest:
    return render_pb2.RenderRequest(render_id=render_id, spec=spec)
