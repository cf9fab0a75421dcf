"""The real services as processes for a benchmark (videojob_launcher): render, export and
gateway on port 0, or the export service against bench's synthetic render server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from videojob_launcher import Role, Stack, StackConfig

__all__ = ["Stack", "running_stack"]

SYNTHETIC_RENDER_MODULE = "bench.synthetic_render_server"


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    *,
    synthetic: bool = False,
    synthetic_duration: float | None = None,
    render_env: Mapping[str, str] | None = None,
    max_concurrent: int | None = None,
    with_gateway: bool = True,
    export_args: tuple[str, ...] = (),
    stamps_file: Path | None = None,
    database: str = "",
    exports: int = 1,
) -> Iterator[Stack]:
    """Starts the processes (each healthy before the next); stops them (SIGTERM, then SIGKILL)
    on the way out. ``synthetic`` puts bench's synthetic render server in the render service's
    place (its renders take ``synthetic_duration`` seconds). With ``stamps_file`` every process
    keeps videojob.stamps and appends them there when it exits. ``database``: a PostgreSQL
    URL for ``exports`` replicas (default: one export service on an SQLite file)."""
    render_args: list[str] = []
    if synthetic and synthetic_duration is not None:
        render_args += ["--duration", str(synthetic_duration)]
    if not synthetic and max_concurrent is not None:
        render_args += ["--max-concurrent", str(max_concurrent)]
    stamping = {"VIDEOJOB_STAMPS": str(stamps_file)} if stamps_file is not None else {}
    config = StackConfig(
        workdir,
        database=database,
        output_dir=workdir / "output",
        render=Role(
            args=tuple(render_args),
            env={**(render_env or {}), **stamping},
            module=SYNTHETIC_RENDER_MODULE if synthetic else "",
        ),
        export=Role(count=exports, args=export_args, env=stamping),
        gateway=Role(count=1 if with_gateway else 0, env=stamping),
        stop_grace=10.0,
    )
    with Stack(config) as stack:
        yield stack


BARE_MODULES = "bench.bare_stack"


@contextlib.contextmanager
def running_bare_stack(
    workdir: Path, *, render_env: Mapping[str, str] | None = None
) -> Iterator[Stack]:
    """bench.bare_stack's three processes in the places of the real ones, started and stopped
    as running_stack does."""
    config = StackConfig(
        workdir,
        output_dir=workdir / "output",
        render=Role(env=dict(render_env or {}), module=f"{BARE_MODULES}.render"),
        export=Role(module=f"{BARE_MODULES}.export"),
        gateway=Role(module=f"{BARE_MODULES}.gateway"),
        stop_grace=10.0,
    )
    with Stack(config) as stack:
        yield stack
