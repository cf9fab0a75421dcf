"""The one check of a rendered output file, used where it is produced and where it is relied upon.

The render service runs it before it reports ``completed`` (with its container reader, so the
file is also a well-formed container with a video stream of the expected duration); the export
service runs it before it writes COMPLETED (the file is there, a regular non-empty file of the
size the render reported), since on several machines the render service's view of the output
storage is not the export service's. Blocking: run it in a thread.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# A render's duration may differ from the one its spec implies by at most this.
DURATION_TOLERANCE_SECONDS = 0.5


class OutputFault(enum.Enum):
    NO_PATH = "no path"
    MISSING = "missing"
    UNREACHABLE = "unreachable"
    NOT_A_FILE = "not a file"
    EMPTY = "empty"
    SIZE_MISMATCH = "size mismatch"
    INVALID_MEDIA = "invalid media"
    NO_VIDEO = "no video"
    WRONG_DURATION = "wrong duration"
    # A stored object whose checksum is not the one the render reported.
    CHECKSUM_MISMATCH = "checksum mismatch"


# The file may yet be seen: the storage may be briefly unreachable, or slow to show it.
PASSING_FAULTS = frozenset({OutputFault.MISSING, OutputFault.UNREACHABLE})


@dataclass(frozen=True)
class OutputProblem:
    fault: OutputFault
    reason: str

    @property
    def lasting(self) -> bool:
        """False: checking again later may find the file in order."""
        return self.fault not in PASSING_FAULTS


@dataclass(frozen=True)
class CheckedOutput:
    size_bytes: int
    # What the media reader found; None when no reader was given.
    duration_seconds: float | None


class MediaInfo(Protocol):
    @property
    def duration_seconds(self) -> float: ...

    @property
    def has_video(self) -> bool: ...


class InvalidMedia(Exception):
    """Raised by a media reader: the file is not well-formed; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Reads a file's structure; raises InvalidMedia, or OSError when the file cannot be read.
MediaReader = Callable[[Path], MediaInfo]


def duration_problem(actual: float, expected: float | None, what: str) -> OutputProblem | None:
    """``what`` lasts ``actual`` seconds: a problem unless within the tolerance of ``expected``
    (None: nothing to compare with)."""
    if expected is None or abs(actual - expected) <= DURATION_TOLERANCE_SECONDS:
        return None
    return OutputProblem(
        OutputFault.WRONG_DURATION, f"{what} lasts {actual:.2f} s, expected {expected:.2f} s"
    )


def check_output(
    path: str | Path,
    *,
    size_bytes: int = 0,
    expected_seconds: float | None = None,
    read_media: MediaReader | None = None,
) -> CheckedOutput | OutputProblem:
    """Blocking. The file at ``path`` as a finished render: a regular, non-empty file (of
    ``size_bytes`` when given); with ``read_media`` also well-formed, with a video stream and
    lasting ``expected_seconds`` (when given)."""
    if not str(path):
        return OutputProblem(OutputFault.NO_PATH, "no output file was named")
    name = str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return OutputProblem(OutputFault.MISSING, f"output {name!r} does not exist")
    except OSError as error:
        reason = f"output {name!r} cannot be reached ({error.strerror or error})"
        return OutputProblem(OutputFault.UNREACHABLE, reason)
    if not stat.S_ISREG(info.st_mode):
        return OutputProblem(OutputFault.NOT_A_FILE, f"output {name!r} is not a regular file")
    if info.st_size == 0:
        return OutputProblem(OutputFault.EMPTY, f"output {name!r} is empty")
    if size_bytes and info.st_size != size_bytes:
        return OutputProblem(
            OutputFault.SIZE_MISMATCH,
            f"output {name!r} has {info.st_size} bytes, the render reported {size_bytes}",
        )
    if read_media is None:
        return CheckedOutput(size_bytes=info.st_size, duration_seconds=None)
    try:
        media = read_media(Path(path))
    except FileNotFoundError:
        return OutputProblem(OutputFault.MISSING, f"output {name!r} does not exist")
    except InvalidMedia as invalid:
        return OutputProblem(OutputFault.INVALID_MEDIA, invalid.reason)
    except OSError as error:
        reason = f"output {name!r} cannot be read ({error.strerror or error})"
        return OutputProblem(OutputFault.UNREACHABLE, reason)
    if not media.has_video:
        return OutputProblem(OutputFault.NO_VIDEO, "the output has no video stream")
    wrong = duration_problem(media.duration_seconds, expected_seconds, "the output")
    if wrong is not None:
        return wrong
    return CheckedOutput(size_bytes=info.st_size, duration_seconds=media.duration_seconds)
