"""The project's real service processes for tests, one at a time (videojob_launcher does the
work; tests that want the whole system use its Stack), and a /proc look at their children."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from videojob_launcher import ServiceProcess, launch
from videojob_launcher.process import PROJECT_ROOT

__all__ = [
    "REPO_ROOT",
    "ServiceProcess",
    "child_pids",
    "gone",
    "module_of",
    "scanned_child_pids",
    "session_members",
    "start_service",
]

REPO_ROOT = PROJECT_ROOT


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid``: what each of its threads lists as its children
    (``/proc/PID/task/TID/children``, a few small reads), else a scan of every process in /proc
    (a kernel built without that file), which a loaded machine can take a second over."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []  # no such process (or already reaped)
    found: list[int] = []
    for task in tasks:
        try:
            found += (int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:
            if not (task / "stat").exists():
                continue  # the thread ended
            return scanned_child_pids(pid)
        except OSError:
            continue
    return sorted(set(found))


def scanned_child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from every process's stat in /proc."""
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


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the parenthesised command name (state, parent pid,
    process group, session, ...); None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def gone(pid: int) -> bool:
    """The process has exited (it is no longer there, or a zombie nobody reaped yet)."""
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def session_members(sessions: Collection[int]) -> list[int]:
    """The live processes in any of the sessions ``sessions`` (the launcher starts each service
    in its own session, whose id is the service's pid; its children, ffmpeg, stay in it even
    once the service has died and they were handed to another parent)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[3]) in sessions:
            found.append(int(entry.name))
    return found


def module_of(pid: int) -> str:
    """MODULE when ``pid`` runs ``python -m MODULE ...``, else the program's name ("" when the
    process is gone)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return ""
    if "-m" in words[:-1]:
        return words[words.index("-m") + 1]
    return Path(words[0]).name


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
