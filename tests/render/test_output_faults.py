"""The output directory going away under a render (moved away, a regular file put at its path,
so every path under it fails with ENOTDIR): the render fails with OUTPUT_UNWRITABLE, never
INTERNAL."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.render.conftest import (
    Running,
    collect,
    events_until,
    ffmpeg_pids,
    is_rendering,
    kind,
    pattern_spec,
    render_request,
    wait_for,
)


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
    await wait_for(lambda: len(ffmpeg_pids("away-1")) == 1)
    (pid,) = ffmpeg_pids("away-1")
    await wait_for(lambda: has_open(pid, ".away-1.partial.mp4"))
    os.kill(pid, signal.SIGSTOP)
    with directory_away(output, parking):
        os.kill(pid, signal.SIGCONT)
        rest = await collect(call)

    failed = rest[-1]
    assert kind(failed) == "failed", failed
    assert failed.failed.code == "OUTPUT_UNWRITABLE", failed.failed
    assert str(output) in failed.failed.message or "output" in failed.failed.message
