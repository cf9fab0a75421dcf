"""An exclusive ``flock`` taken without waiting: held for as long as its descriptor stays open,
released by the kernel when the process dies (render_service.instance, render_service.own_scratch).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def try_lock(path: Path, flags: int, mode: int = 0o644) -> int | None:
    """Blocking. The descriptor of ``path`` (opened with ``flags`` | O_CLOEXEC) with an
    exclusive lock on it; None when another open description holds one. Any other failure
    (the path gone, not ours to open) raises OSError."""
    fd = os.open(path, flags | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd
