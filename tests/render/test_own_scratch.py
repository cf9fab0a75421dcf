"""A render service's own scratch directory (no --scratch-dir): removed at stop, and when its
service is killed, by the next render service that comes up on the machine; never while its
service runs, nor a directory that is not one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from render_service.own_scratch import (
    OWNER_MARK,
    PREFIX,
    make_own_scratch,
    remove_abandoned,
    remove_abandoned_beside,
)
from tests.support.processes import ServiceProcess

# A process that makes its scratch directory, says where, and waits to be killed.
HOLDER = """
import sys, time
from pathlib import Path
from render_service.own_scratch import make_own_scratch
print(make_own_scratch(Path(sys.argv[1])).path, flush=True)
time.sleep(600)
"""


@pytest.fixture
def holders() -> Iterator[Callable[[Path], tuple[subprocess.Popen[str], Path]]]:
    started: list[subprocess.Popen[str]] = []

    def start(parent: Path) -> tuple[subprocess.Popen[str], Path]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(parent)], stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        assert process.stdout is not None
        return process, Path(process.stdout.readline().strip())

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _scratch_dirs(parent: Path) -> set[Path]:
    return set(parent.glob(f"{PREFIX}*"))


def test_a_killed_owner_s_directory_goes_and_a_live_or_unmarked_one_stays(
    tmp_path: Path, holders: Callable[[Path], tuple[subprocess.Popen[str], Path]]
) -> None:
    live_process, live = holders(tmp_path)
    killed_process, killed = holders(tmp_path)
    (killed / "inputs").mkdir()
    (killed / "inputs" / "fetched.mp4").write_bytes(b"\0" * 4096)
    killed_process.send_signal(signal.SIGKILL)
    assert killed_process.wait(timeout=10) == -signal.SIGKILL
    unmarked = tmp_path / f"{PREFIX}starting"  # made this instant, not locked yet
    unmarked.mkdir()
    a_file = tmp_path / f"{PREFIX}file"
    a_file.write_text("not a directory")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / OWNER_MARK).write_text("1\n")
    link = tmp_path / f"{PREFIX}link"
    link.symlink_to(elsewhere)

    mine = make_own_scratch(tmp_path)
    try:
        assert killed.is_dir()  # made, not yet come up
        remove_abandoned_beside(mine)
        assert not killed.exists()
        assert live.is_dir() and (live / OWNER_MARK).is_file()
        assert unmarked.is_dir() and a_file.is_file() and elsewhere.is_dir()
        assert link.is_symlink()
        assert _scratch_dirs(tmp_path) == {live, unmarked, a_file, link, mine.path}
        assert live_process.poll() is None
        # Its own and the live one's are locked: nothing more to remove.
        assert remove_abandoned(tmp_path) == []
    finally:
        mine.remove()
    assert not mine.path.exists()
    # Released: what is left of the live one's goes once its process is gone too.
    live_process.send_signal(signal.SIGKILL)
    live_process.wait(timeout=10)
    assert remove_abandoned(tmp_path) == [live]
    assert _scratch_dirs(tmp_path) == {unmarked, a_file, link}


def test_a_killed_render_service_s_scratch_goes_when_the_next_one_starts(
    tmp_path: Path, process_factory: Callable[..., ServiceProcess]
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {"TMPDIR": str(temporary)}
    first = process_factory(env=env)
    (first_scratch,) = _scratch_dirs(temporary)
    first.kill()
    assert _scratch_dirs(temporary) == {first_scratch}

    second = process_factory(env=env)
    (second_scratch,) = _scratch_dirs(temporary)
    assert second_scratch != first_scratch
    assert second.stop() == 0
    assert _scratch_dirs(temporary) == set()
    assert os.listdir(temporary) == []
