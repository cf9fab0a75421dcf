"""The three real processes, the proxy between export and render, and the files they use.

Every restartable service gets a fixed free port chosen here, so a killed service comes back
on the same address and the addresses the others hold stay valid.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.media import header_duration
from tests.support.processes import ServiceProcess, start_service
from tests.support.tcp_proxy import TcpProxy
from videojob.ffmpeg_binary import ffmpeg_binary

CLIP_NAME = "clip.mp4"
CORRUPT_NAME = "corrupt.mp4"
SERVICES = ("render", "export", "gateway")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StackSettings:
    workdir: Path
    stall_timeout: float = 3.0
    max_attempts: int = 8
    max_concurrent: int = 2


def decode_errors(path: Path) -> str:
    """Decodes every frame of ``path``; returns ffmpeg's error output (empty when clean)."""
    result = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        return result.stderr.strip() or f"ffmpeg exited with {result.returncode}"
    return result.stderr.strip()


def make_media(media_root: Path, rng: random.Random) -> float:
    """A tiny valid clip and a corrupt file; returns the clip's duration."""
    media_root.mkdir(parents=True, exist_ok=True)
    clip = media_root / CLIP_NAME
    subprocess.run(
        [
            ffmpeg_binary(), "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-shortest", str(clip),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    head = clip.read_bytes()[:32]
    (media_root / CORRUPT_NAME).write_bytes(head + rng.randbytes(48 * 1024))
    duration = header_duration(clip)
    assert duration is not None, "the harness's own clip has no duration"
    return duration


@dataclass
class Stack:
    settings: StackSettings
    render_port: int = field(default_factory=free_port)
    proxy_port: int = field(default_factory=free_port)
    export_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    running: dict[str, ServiceProcess] = field(default_factory=dict)
    generations: list[ServiceProcess] = field(default_factory=list)
    proxy: TcpProxy | None = None

    @property
    def media_root(self) -> Path:
        return self.settings.workdir / "media"

    @property
    def output_dir(self) -> Path:
        return self.settings.workdir / "output"

    @property
    def database(self) -> Path:
        return self.settings.workdir / "jobs.sqlite3"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def export_address(self) -> str:
        return f"127.0.0.1:{self.export_port}"

    def _command(self, name: str) -> tuple[str, list[str]]:
        stall = str(self.settings.stall_timeout)
        if name == "render":
            return "render_service", [
                "--listen", f"127.0.0.1:{self.render_port}",
                "--output-dir", str(self.output_dir),
                "--media-root", str(self.media_root),
                "--max-concurrent", str(self.settings.max_concurrent),
                "--stall-timeout", stall,
            ]  # fmt: skip
        if name == "export":
            return "export_service", [
                "--listen", self.export_address,
                "--render-addr", f"127.0.0.1:{self.proxy_port}",
                "--database", f"sqlite:///{self.database}",
                "--stall-timeout", stall,
                "--max-attempts", str(self.settings.max_attempts),
            ]  # fmt: skip
        return "gateway", [
            "--listen", f"127.0.0.1:{self.gateway_port}",
            "--export-addr", self.export_address,
        ]  # fmt: skip

    async def start(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.proxy = await TcpProxy("127.0.0.1", self.render_port).start(port=self.proxy_port)
        for name in SERVICES:
            await self.launch(name)

    async def launch(self, name: str) -> None:
        """Starts ``name`` on its fixed port, retrying while the port is still being released."""
        module, args = self._command(name)
        last_error: AssertionError | None = None
        for _ in range(20):
            try:
                service = await asyncio.to_thread(start_service, module, args)
            except AssertionError as error:
                last_error = error
                await asyncio.sleep(0.5)
                continue
            self.running[name] = service
            self.generations.append(service)
            return
        raise RuntimeError(f"{name} does not come back: {last_error}")

    async def kill(self, name: str) -> None:
        service = self.running.pop(name, None)
        if service is not None:
            await asyncio.to_thread(service.kill)
            await _close_output(service)

    async def restart(self, name: str) -> None:
        await self.kill(name)
        await self.launch(name)

    def is_up(self, name: str) -> bool:
        service = self.running.get(name)
        return service is not None and service.alive()

    async def ensure_up(self) -> list[str]:
        """Brings back any service that died on its own; returns their names."""
        died = []
        for name in SERVICES:
            if not self.is_up(name):
                died.append(name)
                await self.restart(name)
        return died

    async def stop(self) -> None:
        for name in reversed(SERVICES):
            service = self.running.pop(name, None)
            if service is not None:
                with contextlib.suppress(AssertionError):
                    await asyncio.to_thread(service.terminate, 15.0)
                await _close_output(service)
        if self.proxy is not None:
            await self.proxy.close()
        self.write_logs()

    def write_logs(self) -> Path:
        logs = self.settings.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for index, service in enumerate(self.generations):
            path = logs / f"{index:03d}-{service.name}-{service.pid}.log"
            path.write_text("".join(service.output))
        return logs

    def clean(self) -> None:
        shutil.rmtree(self.settings.workdir, ignore_errors=True)


async def _close_output(service: ServiceProcess) -> None:
    """Closes the dead process's stdout pipe once its drain thread has read it to the end."""
    drain = f"drain-{service.name}"
    for _ in range(100):
        if not any(thread.name == drain and thread.is_alive() for thread in threading.enumerate()):
            break
        await asyncio.sleep(0.02)
    else:
        return  # a grandchild still holds the pipe open; leave it to the drain thread
    if service.popen.stdout is not None:
        service.popen.stdout.close()
