"""The scratch directory a render service makes for itself when it is given no ``--scratch-dir``:
a fresh ``videojob-render-*`` directory in the system's temporary directory, removed when the
service stops.

A service that is killed cannot remove it, and in it may lie inputs fetched from the object
store and renders not yet stored: gigabytes. So the directory is locked (``flock`` on the
directory itself) for as long as its service runs, and marked as locked by an ``.owner`` file
written once the lock is held. The kernel releases the lock of a process that dies. Each service
that has come up removes every marked directory whose lock it can take: its service is gone. A
directory not (yet) marked is never touched (a service starting this instant has made it and not
locked it yet)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from render_service.file_lock import try_lock

logger = logging.getLogger(__name__)

PREFIX = "videojob-render-"
OWNER_MARK = ".owner"


@dataclass
class OwnScratch:
    """The directory and the lock held on it until ``remove``."""

    path: Path
    fd: int

    def remove(self) -> None:
        """Blocking. The directory and what is in it, then the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def make_own_scratch(parent: Path | None = None) -> OwnScratch:
    """Blocking. A fresh, locked and marked directory in ``parent`` (default: the system's
    temporary directory)."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    fd: int | None = None
    try:
        fd = try_lock(path, os.O_RDONLY | os.O_DIRECTORY)
        if fd is None:  # a fresh directory is no one else's
            raise OSError(f"{path} is locked by another process")
        (path / OWNER_MARK).write_text(f"{os.getpid()}\n")
    except BaseException:
        if fd is not None:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        raise
    return OwnScratch(path, fd)


def remove_abandoned_beside(scratch: OwnScratch) -> None:
    """Blocking. What render services that are gone left beside ``scratch``, removed and
    logged."""
    removed = remove_abandoned(scratch.path.parent)
    if removed:
        logger.info(
            "removed %d scratch director%s of render services that are gone: %s",
            len(removed),
            "y" if len(removed) == 1 else "ies",
            ", ".join(path.name for path in removed),
        )


def remove_abandoned(parent: Path) -> list[Path]:
    """Blocking. Removes every marked scratch directory in ``parent`` whose lock is free; the
    directories removed."""
    removed: list[Path] = []
    try:
        candidates = sorted(parent.glob(f"{PREFIX}*"))
    except OSError as error:
        logger.warning("could not list %s for abandoned scratch directories: %s", parent, error)
        return removed
    for candidate in candidates:
        if _remove_if_abandoned(candidate):
            removed.append(candidate)
    return removed


def _remove_if_abandoned(path: Path) -> bool:
    try:
        if path.is_symlink() or path.stat().st_uid != os.getuid():
            return False  # not a directory of a service of ours
    except OSError:
        return False
    if not (path / OWNER_MARK).is_file():
        return False
    try:
        fd = try_lock(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False  # gone meanwhile, or not ours to open
    if fd is None:
        return False  # its service runs
    try:
        # Another service may have removed it between our look and our lock.
        if not (path / OWNER_MARK).is_file():
            return False
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
