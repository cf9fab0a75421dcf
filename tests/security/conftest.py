"""A real stack for the security tests (render, export and gateway processes on port 0), whose
media root the tests fill with the files they need; helpers shared by the security tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import videojob_launcher as launcher
from tests.gateway.conftest import GATEWAY_TEST_ARGS
from tests.support.ports import unused_address
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob_launcher import EXPORT_SERVICE, RENDER_SERVICE, Role, Stack, StackConfig

__all__ = ["EXPORT_SERVICE", "RENDER_SERVICE", "unused_address"]

SecurityStack = Stack


def render_args(output_dir: Path, media_root: Path, *extra: str) -> list[str]:
    return launcher.render_args("127.0.0.1:0", output_dir, media_root, *extra)


def export_args(render_addr: str, database: Path, *extra: str) -> list[str]:
    return launcher.export_args("127.0.0.1:0", render_addr, f"sqlite:///{database}", *extra)


def stack_config(root: Path, *, export_extra: Sequence[str] = ()) -> StackConfig:
    return StackConfig(
        root, export=Role(args=tuple(export_extra)), gateway=Role(args=GATEWAY_TEST_ARGS)
    )


def start_stack(root: Path, *, export_extra: Sequence[str] = ()) -> Stack:
    """A running stack; the caller stops it (``stack.stop()``)."""
    return Stack(stack_config(root, export_extra=export_extra)).start()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(stack_config(tmp_path_factory.mktemp("security-stack"))) as running:
        yield running


def make_clip(path: Path, seconds: float = 1.0) -> None:
    """A tiny real video (with audio) for transcode inputs."""
    subprocess.run(
        [
            tool_ffmpeg(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
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
