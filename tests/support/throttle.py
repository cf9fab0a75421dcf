"""Slows processes (a service's ffmpeg) the way a loaded machine would, or freezes them.

The SIGSTOP/SIGCONT cycles run in a thread of their own: a test's busy event loop would otherwise
stretch the running slices and let ffmpeg race ahead exactly when the test is slowest to look.
That thread can still be late on a loaded machine (other processes, the test's own threads
holding the GIL); a running slice that lasted longer than ``run`` is followed by a pause
stretched in proportion, so the targets keep their share of the time, ``run / (run + pause)``,
however late the thread wakes; but never beyond ``MAX_PAUSE_SECONDS``, well under any stall
timeout the tests use: a slowed ffmpeg must look slow, never stalled. (A run of the chaos harness
on a loaded machine woke the thread 0.4 s late and held an ffmpeg stopped for over 3 s: the
render service killed it as STALLED, a failure the harness itself caused.)
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable

from tests.support.processes import child_pids

_TICK = 0.001
MAX_PAUSE_SECONDS = 1.0


def stretched_pause(pause: float, run: float, ran: float) -> float:
    """The pause after a running slice that lasted ``ran`` seconds instead of ``run``."""
    overrun = max(1.0, ran / run) if run > 0 else 1.0
    return min(pause * overrun, max(pause, MAX_PAUSE_SECONDS))


def signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


class Throttle:
    """The processes ``targets()`` names run for ``run`` seconds, then stay stopped for ``pause``
    seconds: at ``pause`` 0 they run freely, at 0.2 (and ``run`` 25 ms) at 1/9 of their speed;
    ``freeze()`` holds them stopped until ``pause`` is set again or the throttle is closed (which
    always resumes them). ``Throttle.children_of(pid)`` targets a service's children.

    Each target found is held by a pidfd, so a running slice ends with one signal to each known
    target at once (asking ``targets()`` again only then, for new ones: on a loaded machine that
    can take longer than the slice, time the targets would run on), and a signal never reaches
    another process that took a dead target's pid."""

    def __init__(
        self, targets: Callable[[], list[int]], pause: float = 0.0, run: float = 0.025
    ) -> None:
        self._targets = targets
        self.pause = pause
        self.run = run
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        # A pidfd for each target found, until a signal finds it gone.
        self._held: dict[int, int] = {}
        self._thread = threading.Thread(target=self._cycle, name="throttle", daemon=True)

    @classmethod
    def children_of(cls, pid: int, pause: float = 0.0, run: float = 0.025) -> Throttle:
        return cls(lambda: child_pids(pid), pause, run)

    def __enter__(self) -> Throttle:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ends the cycles and lets every target run freely again; safe to call twice."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            self._signal_held(signal.SIGCONT)
            signal_all(self._targets(), signal.SIGCONT)
            self._stopped = False
            for pidfd in self._held.values():
                os.close(pidfd)
            self._held.clear()

    def freeze(self) -> list[int]:
        """Stops the targets now (not at the end of the running slice) and keeps them stopped;
        returns the pids it holds."""
        with self._lock:
            self.pause = math.inf
            self._stop_all()
            return sorted(self._held)

    def _stop_all(self) -> None:
        """SIGSTOP to every target held, then to the new ones ``targets()`` names."""
        self._signal_held(signal.SIGSTOP)
        for pid in self._targets():
            if pid in self._held:
                continue
            try:
                self._held[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(self._held[pid], signal.SIGSTOP)
        # With none found, the next look is at the end of the next running slice, not a pause.
        self._stopped = bool(self._held)

    def _signal_held(self, signum: signal.Signals) -> None:
        for pid, pidfd in list(self._held.items()):
            try:
                signal.pidfd_send_signal(pidfd, signum)
            except ProcessLookupError:
                os.close(pidfd)
                del self._held[pid]
            except PermissionError:
                continue

    def _cycle(self) -> None:
        running_since = time.monotonic()
        stopped_since = 0.0
        # The last running slice's length (``run`` when the thread woke on time).
        ran = self.run
        while not self._closing.wait(_TICK):
            now = time.monotonic()
            with self._lock:
                if self._stopped:
                    if now - stopped_since >= stretched_pause(self.pause, self.run, ran):
                        self._signal_held(signal.SIGCONT)
                        self._stopped = False
                        running_since = now
                elif self.pause > 0 and now - running_since >= self.run:
                    self._stop_all()
                    ran = now - running_since
                    stopped_since = running_since = time.monotonic()
