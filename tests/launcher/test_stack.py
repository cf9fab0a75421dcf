"""The launcher on real processes: it refuses what cannot work before starting anything, cleans
up after a failed start, and pauses, kills and restarts one process on its port."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.polling import poll_until
from videojob_launcher import (
    EXPORT_SERVICE,
    RENDER_SERVICE,
    LaunchError,
    ObjectStorage,
    Role,
    Stack,
    StackConfig,
    grpc_serving,
    http_ok,
)


def process_state(pid: int) -> str:
    """The state letter in /proc (R running, S sleeping, T stopped, Z zombie)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def test_several_export_services_on_one_sqlite_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        Stack(StackConfig(tmp_path, export=Role(count=2)))
    with pytest.raises(ValueError, match="sqlite:///PATH or postgresql://"):
        Stack(StackConfig(tmp_path, database="mysql://db/videojob"))
    assert not list(tmp_path.iterdir()), "nothing was started or created"


def test_an_object_storage_that_is_not_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="media root must be s3://"):
        Stack(StackConfig(tmp_path, storage=ObjectStorage("/srv/media", "s3://bucket/renders")))
    with pytest.raises(ValueError, match="output dir 's3://B/renders': bucket 'B'"):
        Stack(StackConfig(tmp_path, storage=ObjectStorage("s3://bucket/media", "s3://B/renders")))
    storage = ObjectStorage("s3://bucket/media", "s3://bucket/renders")
    with pytest.raises(ValueError, match="an object storage or local directories, not both"):
        Stack(StackConfig(tmp_path, output_dir=tmp_path / "renders", storage=storage))
    assert not list(tmp_path.iterdir()), "nothing was started or created"


def test_a_start_that_fails_midway_stops_what_had_started(tmp_path: Path) -> None:
    stack = Stack(StackConfig(tmp_path, export=Role(module="videojob.no_such_service")))
    with pytest.raises(LaunchError, match="export exited"):
        stack.start()
    assert [process.name for process in stack.processes] == ["render", "export"]
    assert all(process.returncode is not None for process in stack.processes)
    assert stack.render.returncode == 0, stack.render.log()  # SIGTERM, not SIGKILL


def test_one_process_paused_killed_and_started_again_on_its_port(tmp_path: Path) -> None:
    with Stack(StackConfig(tmp_path)) as stack:
        render_serving = grpc_serving(RENDER_SERVICE)
        render = stack.render
        render.pause()
        poll_until(lambda: process_state(render.pid) == "T", "the render service to stop")
        assert not render_serving(render.address)
        render.resume()
        poll_until(lambda: render_serving(render.address), "the render service to serve again")

        export = stack.export
        address, first_pid = export.address, export.pid
        assert export.kill() == -9
        assert not grpc_serving(EXPORT_SERVICE)(address)
        export.start()
        assert (export.address, len(export.runs)) == (address, 2)
        assert export.pid != first_pid
        assert grpc_serving(EXPORT_SERVICE)(address)
        assert http_ok()(stack.gateway.address)
    # Every process stopped by SIGTERM and exited cleanly, none killed.
    assert [process.returncode for process in stack.processes] == [0, 0, 0], stack.processes


async def test_from_an_event_loop(tmp_path: Path) -> None:
    async with Stack(StackConfig(tmp_path, gateway=Role(count=0))) as stack:
        assert stack.gateways == []
        port = stack.render.port
        await stack.render.akill()
        await stack.render.astart()
        assert stack.render.port == port
        assert await stack.export.arestart() is stack.export
    assert all(process.returncode == 0 for process in stack.processes)
