"""The output directory going away under a render (moved away, a regular file put at its path,
so every path under it fails with ENOTDIR): the render fails with OUTPUT_UNWRITABLE, never
INTERNAL, and leaves no partial file behind, even after the directory comes back."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from render_service.failures import FailureCode, RenderFailure
from render_service.output_dir import OutputDirectory, partial_name
from tests.render.conftest import (
    Running,
    collect,
    events_until,
    is_rendering,
    kind,
    long_spec,
    one_ffmpeg,
    output_entries,
    partial_files,
    pattern_spec,
    render_request,
    wait_for,
)
from videojob.render.v1 import render_pb2


def has_open(pid: int, name: str) -> bool:
    """True when the process holds a file descriptor on a file called ``name``."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd).endswith(f"/{name}"):
                return True
        except OSError:
            continue
    return False


@contextmanager
def directory_away(directory: Path, parking: Path) -> Iterator[None]:
    """Moves ``directory`` to ``parking`` and puts a regular file at its path until the end."""
    directory.rename(parking)
    directory.write_text("not a directory")
    try:
        yield
    finally:
        directory.unlink()
        parking.rename(directory)


async def test_output_dir_gone_when_ffmpeg_finishes_fails_unwritable(
    service: Running, tmp_path: Path
) -> None:
    """FFmpeg keeps writing through its open file; the check after it finds the path broken."""
    output = service.config.output_dir
    parking = tmp_path / "parked-output"
    spec = pattern_spec(20.0, width=640, height=480, fps=25.0)  # runs for a second or more
    call = service.stub.Render(render_request("away-1", spec))
    await events_until(call, is_rendering)
    pid = await one_ffmpeg(output, "away-1")
    await wait_for(lambda: has_open(pid, service.partial("away-1").name))
    os.kill(pid, signal.SIGSTOP)
    with directory_away(output, parking):
        os.kill(pid, signal.SIGCONT)
        rest = await collect(call)
        left_while_away = partial_files(parking)

    failed = rest[-1]
    assert kind(failed) == "failed", failed
    assert failed.failed.code == "OUTPUT_UNWRITABLE", failed.failed
    assert str(output) in failed.failed.message or "output" in failed.failed.message
    assert left_while_away == []
    assert output_entries(output) == []


async def test_partials_of_ended_renders_are_swept_after_a_render(service: Running) -> None:
    output = service.config.output_dir
    running = service.stub.Render(render_request("busy-1", long_spec()))
    await events_until(running, is_rendering)
    busy_partial = service.partial("busy-1")
    assert busy_partial.exists()
    stray = service.partial("gone-1")
    stray.write_bytes(b"half a video nobody will finish")
    others = output / partial_name("other", "theirs-1", "mp4")
    others.write_bytes(b"half a video another service sharing the directory is writing")

    events = await collect(service.stub.Render(render_request("short-1", pattern_spec(1.0))))

    assert kind(events[-1]) == "completed"
    await wait_for(lambda: not stray.exists())
    assert busy_partial.exists(), "the partial file of a running render was swept"
    await service.stub.CancelRender(render_pb2.CancelRenderRequest(render_id="busy-1"))
    assert partial_files(output) == [others], "only the service's own partial files are swept"


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[OutputDirectory]:
    directory = OutputDirectory.open(tmp_path / "out")
    yield directory
    directory.close()


def test_publish_into_a_directory_moved_away_leaves_no_file(
    opened: OutputDirectory, tmp_path: Path
) -> None:
    opened.create_empty(".r-1.partial.mp4")
    parking = tmp_path / "parked"
    with directory_away(opened.path, parking):
        assert not opened.reachable()
        with pytest.raises(RenderFailure) as caught:
            opened.publish(".r-1.partial.mp4", "r-1.mp4")
        assert caught.value.code == FailureCode.OUTPUT_UNWRITABLE
        assert list(parking.iterdir()) == []
    assert list(opened.path.iterdir()) == []


def test_partial_is_removed_while_its_directory_is_away(
    opened: OutputDirectory, tmp_path: Path
) -> None:
    opened.create_empty(".r-2.partial.mp4")
    with directory_away(opened.path, tmp_path / "parked"):
        opened.remove(".r-2.partial.mp4")
    assert list(opened.path.iterdir()) == []


def test_publish_after_the_directory_came_back(opened: OutputDirectory, tmp_path: Path) -> None:
    opened.create_empty(".r-3.partial.mp4")
    with directory_away(opened.path, tmp_path / "parked"):
        pass
    assert opened.reachable()
    final = opened.publish(".r-3.partial.mp4", "r-3.mp4")
    assert final == opened.path / "r-3.mp4"
    assert final.exists()
