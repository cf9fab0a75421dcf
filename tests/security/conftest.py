"""A real stack for the security tests (render, export and gateway processes on port 0), whose
media root the tests fill with the files they need; helpers shared by the security tests."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.gateway.conftest import close_stopped_pipes, start_gateway, stop_all
from tests.support.processes import ServiceProcess, start_service
from videojob.ffmpeg_binary import ffmpeg_binary

__all__ = ["close_stopped_pipes"]  # imported for its autouse teardown of drained pipes

RENDER_SERVICE = "videojob.render.v1.RenderService"
EXPORT_SERVICE = "videojob.export.v1.ExportService"


@dataclass
class SecurityStack:
    render: ServiceProcess
    export: ServiceProcess
    gateway: ServiceProcess
    root: Path
    media_root: Path
    output_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}"


def render_args(output_dir: Path, media_root: Path, *extra: str) -> list[str]:
    return [
        "--listen", "127.0.0.1:0", "--output-dir", str(output_dir),
        "--media-root", str(media_root), *extra,
    ]  # fmt: skip


def export_args(render_addr: str, database: Path, *extra: str) -> list[str]:
    return [
        "--listen", "127.0.0.1:0", "--render-addr", render_addr,
        "--database", f"sqlite:///{database}", *extra,
    ]  # fmt: skip


def start_stack(root: Path, *, export_extra: Sequence[str] = ()) -> SecurityStack:
    output_dir, media_root = root / "renders", root / "media"
    output_dir.mkdir(parents=True)
    media_root.mkdir(parents=True)
    started: list[ServiceProcess] = []
    try:
        render = start_service("render_service", render_args(output_dir, media_root))
        started.append(render)
        export = start_service(
            "export_service", export_args(render.address, root / "export.db", *export_extra)
        )
        started.append(export)
        gateway = start_gateway(export.address)
        started.append(gateway)
    except BaseException:
        stop_all(list(reversed(started)))
        raise
    return SecurityStack(render, export, gateway, root, media_root, output_dir)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurityStack]:
    running = start_stack(tmp_path_factory.mktemp("security-stack"))
    yield running
    stop_all([running.gateway, running.export, running.render])


def unused_address() -> str:
    """An address where nothing listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


def make_clip(path: Path, seconds: float = 1.0) -> None:
    """A tiny real video (with audio) for transcode inputs."""
    subprocess.run(
        [
            ffmpeg_binary(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=10:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-shortest", str(path),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def health_status(address: str, service: str) -> int:
    """The grpc.health.v1 status of ``service`` at ``address`` (plaintext)."""
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
    return int(answer.status)


SERVING = health_pb2.HealthCheckResponse.SERVING
