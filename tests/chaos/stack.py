"""The three real processes (videojob.launcher), the proxy between export and render, and the
files they use.

A killed service comes back on the port it had, so the addresses the others hold stay valid.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.media import header_duration
from tests.support.tcp_proxy import TcpProxy
from videojob import launcher
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.launcher import Role, ServiceProcess, StackConfig

CLIP_NAME = "clip.mp4"
CORRUPT_NAME = "corrupt.mp4"
SERVICES = ("render", "export", "gateway")


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
    proxy: TcpProxy | None = None
    processes: launcher.Stack = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        stall = str(settings.stall_timeout)
        concurrent = str(settings.max_concurrent)
        self.processes = launcher.Stack(
            StackConfig(
                settings.workdir,
                database=f"sqlite:///{settings.workdir / 'jobs.sqlite3'}",
                output_dir=settings.workdir / "output",
                render=Role(args=("--max-concurrent", concurrent, "--stall-timeout", stall)),
                export=Role(
                    args=("--stall-timeout", stall, "--max-attempts", str(settings.max_attempts))
                ),
            )
        )

    @property
    def media_root(self) -> Path:
        return self.processes.media_root

    @property
    def output_dir(self) -> Path:
        return self.processes.output_dir

    @property
    def gateway_url(self) -> str:
        return self.processes.url

    @property
    def export_address(self) -> str:
        return self.processes.export.address

    def service(self, name: str) -> ServiceProcess:
        return self.processes.find(name)

    async def start(self) -> None:
        """Render, then the proxy in front of it, then export (through the proxy) and gateway;
        what started is stopped again when a step fails."""
        try:
            await asyncio.to_thread(self.processes.start_renders)
            self.proxy = await TcpProxy("127.0.0.1", self.processes.render.port).start()
            await asyncio.to_thread(self.processes.start_exports, self.proxy.address)
            await asyncio.to_thread(self.processes.start_gateways)
        except BaseException:
            await self.stop()
            raise

    async def launch(self, name: str) -> None:
        """Starts ``name`` again on its port."""
        await self.service(name).astart()

    async def kill(self, name: str) -> None:
        await self.service(name).akill()

    async def restart(self, name: str) -> None:
        await self.kill(name)
        await self.launch(name)

    def is_up(self, name: str) -> bool:
        return self.service(name).alive()

    async def ensure_up(self) -> list[str]:
        """Brings back any service that died on its own; returns their names."""
        died = []
        for name in SERVICES:
            if not self.is_up(name):
                died.append(name)
                await self.restart(name)
        return died

    async def stop(self) -> None:
        await self.processes.astop()
        if self.proxy is not None:
            await self.proxy.close()
        self.write_logs()

    def write_logs(self) -> Path:
        logs = self.settings.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        runs = [(run, process.name) for process in self.processes.processes for run in process.runs]
        for index, (run, name) in enumerate(sorted(runs, key=lambda pair: pair[0].started)):
            path = logs / f"{index:03d}-{name}-{run.pid}.log"
            path.write_text("".join(run.output))
        return logs

    def clean(self) -> None:
        shutil.rmtree(self.settings.workdir, ignore_errors=True)
