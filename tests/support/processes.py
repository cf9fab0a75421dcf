"""The project's real service processes for tests, one at a time (videojob.launcher does the
work; tests that want the whole system use its Stack), and a /proc look at their children."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from videojob.launcher import ServiceProcess, launch
from videojob.launcher.process import PROJECT_ROOT

__all__ = ["REPO_ROOT", "ServiceProcess", "child_pids", "start_service"]

REPO_ROOT = PROJECT_ROOT


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a /proc scan, no psutil)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The parent pid is the second field after the parenthesised command name.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def start_service(
    module: str,
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> ServiceProcess:
    """Runs ``python -m module args`` and returns once it prints its listening address (no
    health check: tests start processes pointed at nothing on purpose)."""
    return launch(module, module, args, env=env, ready_timeout=ready_timeout)
