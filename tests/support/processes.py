"""Start the project's real service processes for tests, on port 0, and stop them.

Every service prints ``<name> listening on HOST:PORT`` on stdout once it serves; this module
waits for that line. Output is drained by a thread into memory so a chatty process never
blocks on a full pipe, and is available for failure messages.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LISTENING = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+)")
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServiceProcess:
    name: str
    popen: subprocess.Popen[str]
    port: int = 0
    output: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return "".join(self.output[-200:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, no chance to clean up."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            message = f"{self.name} ignored SIGTERM for {timeout}s:\n{self.log()}"
            raise AssertionError(message) from None


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
    """Runs ``python -m module args`` and returns once it prints its listening address."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    popen = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
        env=full_env,
        start_new_session=True,
    )
    service = ServiceProcess(name=module, popen=popen)
    ready = threading.Event()

    def drain() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            service.output.append(line)
            match = LISTENING.search(line)
            if match and not ready.is_set():
                service.port = int(match["port"])
                ready.set()
        popen.stdout.close()
        ready.set()

    threading.Thread(target=drain, name=f"drain-{module}", daemon=True).start()
    deadline = time.monotonic() + ready_timeout
    while not ready.wait(timeout=0.05):
        if time.monotonic() > deadline:
            service.kill()
            raise AssertionError(f"{module} did not start in {ready_timeout}s:\n{service.log()}")
    if not service.port:
        service.kill()
        raise AssertionError(f"{module} exited before listening:\n{service.log()}")
    return service
