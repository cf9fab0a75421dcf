"""Slows a process's children (a service's ffmpeg) the way a loaded machine would, or freezes them.

The SIGSTOP/SIGCONT cycles run in a thread of their own: a test's busy event loop would otherwise
stretch the running slices and let ffmpeg race ahead exactly when the test is slowest to look.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from pathlib import Path

RUN_SLICE = 0.025
_TICK = 0.002


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                children += [int(child) for child in (task / "children").read_text().split()]
    return children


def signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


class Throttle:
    """Every child of ``pid`` runs for 25 ms, then stays stopped for ``pause`` seconds: at
    ``pause`` 0 it runs freely, at 0.2 it runs at 1/9 of its speed, and ``freeze()`` holds it
    stopped until ``pause`` is set again or the throttle is closed (which always resumes it)."""

    def __init__(self, pid: int, pause: float = 0.0) -> None:
        self._pid = pid
        self.pause = pause
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._stopped: list[int] = []
        self._thread = threading.Thread(target=self._cycle, name="throttle", daemon=True)

    def __enter__(self) -> Throttle:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the cycles and lets every child run freely again; safe to call twice."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            signal_all(self._stopped + child_pids(self._pid), signal.SIGCONT)
            self._stopped = []

    def freeze(self) -> None:
        """Stops the children now (not at the end of the running slice) and keeps them stopped."""
        with self._lock:
            self.pause = math.inf
            children = child_pids(self._pid)
            signal_all(children, signal.SIGSTOP)
            self._stopped = sorted(set(self._stopped) | set(children))

    def _cycle(self) -> None:
        running_since = time.monotonic()
        stopped_since = 0.0
        while not self._closing.wait(_TICK):
            now = time.monotonic()
            with self._lock:
                if self._stopped:
                    if now - stopped_since >= self.pause:
                        signal_all(self._stopped, signal.SIGCONT)
                        self._stopped = []
                        running_since = now
                elif self.pause > 0 and now - running_since >= RUN_SLICE:
                    self._stopped = child_pids(self._pid)
                    signal_all(self._stopped, signal.SIGSTOP)
                    stopped_since = now
