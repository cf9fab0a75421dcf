"""What happens when one of a stack's processes exits on its own: nothing is restarted and the
caller stops everything (``when="no"``, what the tests and benchmarks want), or, as systemd's
``Restart=on-failure`` with ``RestartSec=`` and ``StartLimitBurst=``/``StartLimitIntervalSec=``
does, it is started again with the same flags on the same port after a backoff while the others
keep running, until it crash-loops.

Each exit is reported in one line naming the process, its pid and exit status, and when it is
started again (or why it is not)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from videojob_launcher.process import READY_TIMEOUT_SECONDS, Aborted, LaunchError, ServiceProcess

logger = logging.getLogger(__name__)

Restart = Literal["no", "on-failure", "always"]
RESTART_CHOICES: tuple[str, ...] = get_args(Restart)
WATCH_INTERVAL_SECONDS = 0.2

Report = Callable[[str], None]
"""Called with each line the supervision has to say (an exit, a restart, giving up)."""


@dataclass(frozen=True)
class RestartPolicy:
    """When and how often a process that exited on its own is started again.

    ``when``: "no" restarts nothing (supervision ends at the first exit, and the caller stops
    the others); "on-failure" restarts a process that exited with a non-zero status or was
    killed by a signal (one that exited 0 stays down); "always" restarts any exit. The n-th
    restart of a process within the last ``interval`` seconds waits ``backoff`` * 2**(n-1)
    seconds, at most ``max_backoff``. A process that exits again after ``burst`` restarts
    within the last ``interval`` seconds is crash-looping: supervision ends."""

    when: Restart = "on-failure"
    backoff: float = 1.0
    max_backoff: float = 30.0
    burst: int = 5
    interval: float = 60.0

    def __post_init__(self) -> None:
        if self.when not in RESTART_CHOICES:
            raise ValueError(f"when must be no, on-failure or always, not {self.when!r}")
        if not self.backoff >= 0:
            raise ValueError(f"backoff must be >= 0, not {self.backoff!r}")
        if not self.max_backoff >= self.backoff:
            raise ValueError(f"max_backoff must be >= backoff ({self.backoff:g})")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, not {self.burst!r}")
        if not self.interval > 0:
            raise ValueError(f"interval must be > 0, not {self.interval!r}")

    def restarts(self, returncode: int | None) -> bool:
        """Whether a process that exited with ``returncode`` is started again."""
        return self.when == "always" or (self.when == "on-failure" and returncode != 0)

    def delay(self, restarts: int) -> float:
        """Seconds before restarting a process already restarted ``restarts`` times within the
        interval."""
        return float(min(self.backoff * 2.0 ** min(restarts, 64), self.max_backoff))


NO_RESTART = RestartPolicy(when="no")


def describe_status(returncode: int | None) -> str:
    """``1``, or ``-9 (SIGKILL)`` for a process killed by a signal."""
    if returncode is None:
        return "unknown"
    if returncode >= 0:
        return str(returncode)
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"{returncode} ({name})"


def supervise(
    processes: Sequence[ServiceProcess],
    policy: RestartPolicy,
    stop: threading.Event,
    report: Report | None = None,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> ServiceProcess | None:
    """Watches ``processes`` until ``stop`` is set (None), every one of them is down for good
    (None: they exited 0 and are not restarted), or one exits and the policy says to give up:
    that one is returned. The caller stops the others. A restart is one attempt: a process that
    exits before it is healthy counts as another exit. A restart waiting for its process to be
    healthy is called off by ``stop``."""
    say = report or logger.warning
    recent: dict[str, deque[float]] = {process.name: deque() for process in processes}
    due: dict[str, float] = {}  # name -> when (monotonic) it is started again
    down: set[str] = set()  # exited 0 under on-failure: left down
    while not stop.wait(WATCH_INTERVAL_SECONDS):
        for process in processes:
            name = process.name
            if name in due or name in down or process.alive():
                continue
            now = time.monotonic()
            restarts = recent[name]
            while restarts and restarts[0] < now - policy.interval:
                restarts.popleft()
            exited = f"{name} (pid {process.pid}) exited with status "
            exited += describe_status(process.returncode)
            if policy.when == "no":
                say(f"{exited}; stopping the others")
                return process
            if not policy.restarts(process.returncode):
                say(f"{exited}; not restarted (restart {policy.when})")
                down.add(name)
                continue
            if len(restarts) >= policy.burst:
                say(
                    f"{exited} again: {len(restarts)} restarts within {policy.interval:g} s; "
                    "giving up, stopping everything"
                )
                return process
            delay = policy.delay(len(restarts))
            due[name] = now + delay
            say(
                f"{exited}; restarting it in {delay:g} s (restart {len(restarts) + 1} of at most "
                f"{policy.burst} within {policy.interval:g} s)"
            )
        if len(down) == len(processes):
            return None
        for process in processes:
            if process.name not in due or due[process.name] > time.monotonic():
                continue
            del due[process.name]
            recent[process.name].append(time.monotonic())
            try:
                process.start(ready_timeout, abort=stop, once=True)
            except Aborted:
                return None
            except LaunchError as error:  # it is dead: the next round reports its exit
                say(str(error).partition("\n")[0].rstrip(":"))
                continue
            say(f"{process.name} restarted: pid {process.pid} on {process.address}")
    return None
