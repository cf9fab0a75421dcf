"""One service process: ``python -m MODULE ARGS`` started, watched, signalled, restarted, stopped.

Every videojob process prints ``<name> listening on HOST:PORT`` on stdout once it has bound its
port (port 0 picks a free one). A drain thread reads the process's output into memory (so a
chatty process never blocks on a full pipe), optionally echoes it, and notes that line. The
process is ready once it has printed it and, when a probe is given, the probe says it is healthy.

The blocking methods (start, stop, kill, restart) are for sync code; their ``a``-prefixed twins
run them in a worker thread for code inside an event loop. Signals (pause, resume) never block.

Stopping is SIGTERM, then SIGKILL after the process's stop grace (``ProcessSpec.stop_grace``). A
render service drains on SIGTERM (finishes its running renders, up to its drain timeout), so the
stack gives it that long; ``at_once`` adds a SIGINT, the second signal that cuts a drain short.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

LISTENING = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+)")
# The folder that holds videojob and the services' packages: ``python -m`` runs from there.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 15.0
KILL_WAIT_SECONDS = 10.0
DRAIN_JOIN_SECONDS = 2.0
PROBE_INTERVAL_SECONDS = 0.1
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})

Probe = Callable[[str], bool]
"""Answers whether the process at ``HOST:PORT`` is healthy now (never raises, never hangs)."""
Echo = Callable[[str, str], None]
"""Called with (process name, output line) for every line a process prints."""


class LaunchError(RuntimeError):
    """A process did not come up: it exited first, or was not ready in time."""


class Aborted(LaunchError):
    """A start was called off (its ``abort`` event was set) before the process was ready; the
    process may be running: the caller stops it (``stop``)."""


@dataclass(frozen=True)
class ProcessSpec:
    """What to run. ``args`` holds ``--listen HOST:PORT`` where the program takes it."""

    name: str
    module: str
    args: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    probe: Probe | None = None  # None: ready once it prints its address
    # Seconds ``stop()`` waits after SIGTERM before SIGKILL; None: STOP_GRACE_SECONDS.
    stop_grace: float | None = None


@dataclass
class Run:
    """One operating-system process of a service (a restart makes a new one)."""

    popen: subprocess.Popen[str]
    started: float = field(default_factory=time.monotonic)
    output: list[str] = field(default_factory=list)
    announced: threading.Event = field(default_factory=threading.Event)
    address: tuple[str, int] | None = None
    drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid


def with_listen(args: Sequence[str], listen: str) -> list[str]:
    """``args`` with the value of ``--listen`` replaced (a restart keeps the bound port)."""
    pinned = list(args)
    for index, arg in enumerate(pinned[:-1]):
        if arg == "--listen":
            pinned[index + 1] = listen
    return pinned


class ServiceProcess:
    """A service that can be started, signalled, stopped and started again on the same port."""

    def __init__(self, spec: ProcessSpec, *, echo: Echo | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self._args = list(spec.args)
        self._echo = echo
        self.host = ""
        self.port = 0
        self.runs: list[Run] = []

    # -- what it is -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``HOST:PORT`` to connect to (a wildcard listen address becomes the loopback)."""
        host = "127.0.0.1" if self.host in WILDCARD_HOSTS else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    @property
    def current(self) -> Run:
        if not self.runs:
            raise LaunchError(f"{self.name} was never started")
        return self.runs[-1]

    @property
    def popen(self) -> subprocess.Popen[str]:
        return self.current.popen

    @property
    def pid(self) -> int:
        return self.current.pid

    @property
    def output(self) -> list[str]:
        return self.current.output

    @property
    def returncode(self) -> int | None:
        return self.current.popen.poll()

    def log(self, lines: int = 200) -> str:
        return "".join(self.current.output[-lines:]) if self.runs else ""

    def alive(self) -> bool:
        return bool(self.runs) and self.current.popen.poll() is None

    @property
    def stop_grace(self) -> float:
        """Seconds ``stop()`` waits after SIGTERM before SIGKILL, unless told otherwise."""
        return STOP_GRACE_SECONDS if self.spec.stop_grace is None else self.spec.stop_grace

    # -- starting ---------------------------------------------------------------------------

    def start(
        self,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        *,
        abort: threading.Event | None = None,
        once: bool = False,
    ) -> ServiceProcess:
        """Starts the process and returns once it is ready; on failure it is killed and
        LaunchError says why, with its output. Started again, it asks for the port it had, and
        keeps asking (within ``ready_timeout``) while the port is still held, unless ``once``:
        then a process that exits before it listens is a failure at once (a supervisor counts
        each attempt). ``abort`` set while it waits raises Aborted."""
        if self.alive():
            raise LaunchError(f"{self.name} is already running (pid {self.pid})")
        deadline = time.monotonic() + ready_timeout
        while True:
            _check(abort, self.name)
            run = self._spawn()
            if self._wait_announced(run, deadline, abort):
                break
            if once or not self.port or time.monotonic() >= deadline:
                raise LaunchError(
                    f"{self.name} exited (status {run.popen.returncode}) before listening:\n"
                    f"{self.log()}"
                )
            _pause(abort, self.name, PROBE_INTERVAL_SECONDS)
        assert run.address is not None
        self.host, self.port = run.address
        self._args = with_listen(self._args, f"{self.host}:{self.port}")
        if self.spec.probe is not None:
            self._wait_healthy(self.spec.probe, deadline, abort)
        return self

    def _spawn(self) -> Run:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env}
        popen = subprocess.Popen(
            [sys.executable, "-m", self.spec.module, *self._args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own session: a terminal's Ctrl-C reaches only the launcher, which stops the
            # processes in order, and a caller can signal the whole group.
            start_new_session=True,
        )
        run = Run(popen)
        run.drain = threading.Thread(
            target=self._drain, args=(run,), name=f"drain-{self.name}", daemon=True
        )
        self.runs.append(run)
        run.drain.start()
        return run

    def _drain(self, run: Run) -> None:
        stream = run.popen.stdout
        assert stream is not None
        try:
            echo = self._echo
            for line in stream:
                run.output.append(line)
                if echo is not None:
                    try:
                        echo(self.name, line)
                    except OSError as error:  # where it echoes to is gone; keep reading
                        logger.warning("%s: no more echo of its output: %s", self.name, error)
                        echo = None
                match = LISTENING.search(line)
                if match and not run.announced.is_set():
                    run.address = (match["host"], int(match["port"]))
                    run.announced.set()
            stream.close()
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        finally:
            run.announced.set()

    def _wait_announced(self, run: Run, deadline: float, abort: threading.Event | None) -> bool:
        """True once the process printed its address; False when it exited first."""
        while not run.announced.wait(timeout=PROBE_INTERVAL_SECONDS):
            _check(abort, self.name)
            if time.monotonic() >= deadline:
                self.kill()
                raise LaunchError(f"{self.name} did not listen in time:\n{self.log()}")
        if run.address is None:
            self.kill()
            return False
        return True

    def _wait_healthy(self, probe: Probe, deadline: float, abort: threading.Event | None) -> None:
        while not probe(self.address):
            if not self.alive():
                raise LaunchError(
                    f"{self.name} exited (status {self.returncode}) before it was healthy:\n"
                    f"{self.log()}"
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise LaunchError(f"{self.name} was not healthy in time:\n{self.log()}")
            _pause(abort, self.name, PROBE_INTERVAL_SECONDS)

    # -- signals ----------------------------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        if self.alive():
            self.current.popen.send_signal(signum)

    def pause(self) -> None:
        """SIGSTOP: the process freezes (its sockets stay open) until ``resume``."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.send_signal(signal.SIGCONT)

    # -- stopping ---------------------------------------------------------------------------

    def request_stop(self, *, at_once: bool = False) -> None:
        """SIGTERM (and SIGCONT, so that a paused process can act on it); does not wait.
        ``at_once`` also sends SIGINT: a second stop signal, which cuts a render service's drain
        short (its running renders fail SHUTDOWN); to the other services it is one more SIGTERM."""
        self.send_signal(signal.SIGTERM)
        if at_once:
            self.send_signal(signal.SIGINT)
        self.send_signal(signal.SIGCONT)

    def wait_stopped(self, deadline: float) -> int | None:
        """Waits for the exit until ``deadline`` (monotonic), then SIGKILLs; the exit status."""
        if not self.runs:
            return None
        run = self.current
        try:
            run.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, run.pid)
            run.popen.kill()
            run.popen.wait(timeout=KILL_WAIT_SECONDS)
        self._join_drain(run)
        return run.popen.returncode

    def stop(self, grace: float | None = None, *, at_once: bool = False) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds (default: its ``stop_grace``), then SIGKILL; the
        exit status. ``at_once``: see ``request_stop``."""
        self.request_stop(at_once=at_once)
        return self.wait_stopped(time.monotonic() + (self.stop_grace if grace is None else grace))

    def terminate(self, timeout: float | None = None) -> int | None:
        """``stop`` under the name subprocess.Popen gives it."""
        return self.stop(timeout)

    def kill(self) -> int | None:
        """SIGKILL: no chance to clean up. The exit status (None if never started)."""
        self.send_signal(signal.SIGKILL)
        return self.wait_stopped(time.monotonic() + KILL_WAIT_SECONDS)

    def restart(self, grace: float | None = None, *, at_once: bool = False) -> ServiceProcess:
        """Stops the process (if it runs; ``stop``) and starts it again on the same port."""
        self.stop(grace, at_once=at_once)
        return self.start()

    def _join_drain(self, run: Run) -> None:
        # A grandchild that inherited the pipe can keep it open; the daemon thread then ends
        # when that one does.
        if run.drain is not None:
            run.drain.join(timeout=DRAIN_JOIN_SECONDS)

    # -- the same from an event loop ---------------------------------------------------------

    async def astart(self, ready_timeout: float = READY_TIMEOUT_SECONDS) -> ServiceProcess:
        return await asyncio.to_thread(self.start, ready_timeout)

    async def astop(self, grace: float | None = None, *, at_once: bool = False) -> int | None:
        return await asyncio.to_thread(lambda: self.stop(grace, at_once=at_once))

    async def akill(self) -> int | None:
        return await asyncio.to_thread(self.kill)

    async def arestart(
        self, grace: float | None = None, *, at_once: bool = False
    ) -> ServiceProcess:
        return await asyncio.to_thread(lambda: self.restart(grace, at_once=at_once))


def _check(abort: threading.Event | None, name: str) -> None:
    if abort is not None and abort.is_set():
        raise Aborted(f"the start of {name} was called off")


def _pause(abort: threading.Event | None, name: str, seconds: float) -> None:
    """Sleeps ``seconds``, or raises Aborted as soon as ``abort`` is set."""
    if abort is None:
        time.sleep(seconds)
    elif abort.wait(seconds):
        raise Aborted(f"the start of {name} was called off")


def launch(
    name: str,
    module: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    probe: Probe | None = None,
    echo: Echo | None = None,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
    stop_grace: float | None = None,
) -> ServiceProcess:
    """Starts one process and returns it once it is ready."""
    spec = ProcessSpec(name, module, list(args), dict(env or {}), probe, stop_grace)
    return ServiceProcess(spec, echo=echo).start(ready_timeout)
