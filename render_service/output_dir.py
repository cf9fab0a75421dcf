"""The output directory as one render sees it. It is opened once per render and files are
created, renamed and removed relative to that open directory (``dir_fd``), so a partial file
can still be removed while the directory's path leads somewhere else (moved away, replaced).
Whether the path still leads to this directory is checked before a file is reported done."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from render_service.failures import FailureCode, RenderFailure

logger = logging.getLogger(__name__)

PARTIAL_MARKER = ".partial."


def partial_name(instance_id: str, render_id: str, container: str) -> str:
    """``.<instance id>.<render id>.partial.<container>``: the render service that writes it is in
    the name (neither id holds a dot), so services sharing the directory tell theirs apart."""
    return f".{instance_id}.{render_id}{PARTIAL_MARKER}{container}"


def final_name(render_id: str, container: str) -> str:
    return f"{render_id}.{container}"


def owned_render_id(name: str, instance_id: str) -> str | None:
    """The render id in the name of a partial file of ``instance_id``; None for any other name
    (another service's partial files, finished files)."""
    prefix = f".{instance_id}."
    if not name.startswith(prefix) or PARTIAL_MARKER not in name:
        return None
    return name[len(prefix) :].split(PARTIAL_MARKER, 1)[0] or None


def _unwritable(action: str, exc: OSError) -> RenderFailure:
    return RenderFailure(
        FailureCode.OUTPUT_UNWRITABLE,
        f"{action}: {exc.strerror or exc}",
    )


class OutputDirectory:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def open(cls, path: Path) -> OutputDirectory:
        """Creates the directory if needed and opens it; OUTPUT_UNWRITABLE when it cannot."""
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _unwritable("cannot open the output directory", exc) from None
        return cls(path, fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def create_empty(self, name: str) -> None:
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            os.close(os.open(name, flags, 0o644, dir_fd=self._fd))
        except OSError as exc:
            raise _unwritable("cannot write to the output directory", exc) from None
        if not self.holds(name):
            self.remove(name)
            raise RenderFailure(
                FailureCode.OUTPUT_UNWRITABLE, "the output directory is not reachable at its path"
            )

    def remove(self, name: str) -> None:
        """Never raises: a file that cannot be removed is logged (and swept later)."""
        try:
            os.unlink(name, dir_fd=self._fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot remove %s from %s: %s", name, self.path, exc)

    def reachable(self) -> bool:
        """True when the directory's path still leads to the directory this render opened."""
        try:
            seen = os.stat(self.path)
            opened = os.fstat(self._fd)
        except OSError:
            return False
        return stat.S_ISDIR(seen.st_mode) and _same_file(seen, opened)

    def holds(self, name: str) -> bool:
        """True when ``<path>/<name>`` is the very file named ``name`` in the opened directory."""
        try:
            by_path = os.stat(self.path / name)
            by_fd = os.stat(name, dir_fd=self._fd)
        except OSError:
            return False
        return _same_file(by_path, by_fd)

    def publish(self, partial: str, final: str) -> Path:
        """Renames ``partial`` to ``final`` and returns the final path, checked by path to hold
        the file. Otherwise no file is left behind and OUTPUT_UNWRITABLE is raised."""
        try:
            os.replace(partial, final, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except OSError as exc:
            raise _unwritable("cannot move the output into place", exc) from None
        if not self.holds(final):
            self.remove(final)
            raise RenderFailure(
                FailureCode.OUTPUT_UNWRITABLE,
                "the output directory was not reachable at its path when the file was moved there",
            )
        return self.path / final


def _same_file(first: os.stat_result, second: os.stat_result) -> bool:
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def partial_names(path: Path, instance_id: str) -> list[str]:
    """The partial files of ``instance_id`` in the directory at ``path``; none when it cannot
    be listed."""
    try:
        with os.scandir(path) as entries:
            return [entry.name for entry in entries if owned_render_id(entry.name, instance_id)]
    except OSError:
        return []


def remove_partials(
    path: Path, instance_id: str, names: Iterable[str], keep: Callable[[str], bool]
) -> int:
    """Removes those of ``names`` in ``path`` that are partial files of ``instance_id``, except
    those of renders ``keep`` names; returns how many were removed."""
    removed = 0
    for name in names:
        render_id = owned_render_id(name, instance_id)
        if render_id is None or keep(render_id):
            continue
        try:
            os.unlink(path / name)
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("cannot remove %s from %s: %s", name, path, exc)
    return removed


def remove_stale_partials(path: Path, instance_id: str) -> int:
    """Removes every partial file of ``instance_id`` in ``path`` (left by its previous process);
    other render services' partial files are theirs. Returns how many were removed."""
    return remove_partials(path, instance_id, partial_names(path, instance_id), lambda _: False)
