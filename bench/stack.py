"""The real services as processes for a benchmark (render, export, gateway), each on port 0,
or the export service against bench's synthetic render server."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import ServiceProcess, start_service


@dataclass
class Stack:
    workdir: Path
    render: ServiceProcess
    export: ServiceProcess
    gateway: ServiceProcess | None = None
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def gateway_port(self) -> int:
        assert self.gateway is not None
        return self.gateway.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def database(self) -> Path:
        return self.workdir / "export.db"


def start_render(
    workdir: Path,
    *,
    synthetic_duration: float | None = None,
    synthetic: bool = False,
    env: dict[str, str] | None = None,
    max_concurrent: int | None = None,
) -> ServiceProcess:
    output = workdir / "output"
    output.mkdir(parents=True, exist_ok=True)
    if synthetic:
        args = ["--listen", "127.0.0.1:0", "--output-dir", str(output)]
        if synthetic_duration is not None:
            args += ["--duration", str(synthetic_duration)]
        return start_service("bench.synthetic_render_server", args, env=env)
    media = workdir / "media"
    media.mkdir(parents=True, exist_ok=True)
    args = ["--listen", "127.0.0.1:0", "--output-dir", str(output), "--media-root", str(media)]
    if max_concurrent is not None:
        args += ["--max-concurrent", str(max_concurrent)]
    return start_service("render_service", args, env=env)


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    *,
    synthetic: bool = False,
    synthetic_duration: float | None = None,
    render_env: dict[str, str] | None = None,
    max_concurrent: int | None = None,
    with_gateway: bool = True,
    export_args: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """Starts the processes; stops them (SIGTERM, then SIGKILL) on the way out."""
    started: list[ServiceProcess] = []
    try:
        render = start_render(
            workdir,
            synthetic=synthetic,
            synthetic_duration=synthetic_duration,
            env=render_env,
            max_concurrent=max_concurrent,
        )
        started.append(render)
        export = start_service(
            "export_service",
            [
                "--listen",
                "127.0.0.1:0",
                "--render-addr",
                render.address,
                "--database",
                f"sqlite:///{workdir / 'export.db'}",
                *export_args,
            ],
        )
        started.append(export)
        gateway = None
        if with_gateway:
            gateway = start_service(
                "gateway", ["--listen", "127.0.0.1:0", "--export-addr", export.address]
            )
            started.append(gateway)
        yield Stack(workdir, render, export, gateway, started)
    finally:
        for process in reversed(started):
            stop(process)


def stop(process: ServiceProcess) -> None:
    """SIGTERM (SIGKILL after 10 s), then closes its output pipe once it has been drained."""
    with contextlib.suppress(AssertionError):
        process.terminate(timeout=10)
    for thread in threading.enumerate():
        if thread.name == f"drain-{process.name}":
            thread.join(timeout=2)
    if process.popen.stdout is not None:
        process.popen.stdout.close()
