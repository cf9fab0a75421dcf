"""scripts/run_stack.py as a test runs it: a real launcher on free ports with SQLite in a
temporary directory, watched through /proc and health checks (never its output), and cleaned up
to the last ffmpeg whatever happened."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support.polling import poll_until
from tests.support.ports import free_port
from tests.support.processes import REPO_ROOT, child_pids, gone, module_of, session_members
from videojob_launcher import EXPORT_SERVICE, RENDER_SERVICE, grpc_serving, http_ok

MODULES = ("render_service", "export_service", "gateway")
PROBES = {
    "render_service": grpc_serving(RENDER_SERVICE),
    "export_service": grpc_serving(EXPORT_SERVICE),
    "gateway": http_ok(),
}
# Restarts within the tests: almost at once (the defaults wait a second and more).
QUICK_RESTARTS = ("--restart-backoff", "0.05", "--restart-backoff-max", "0.2")


@dataclass
class Launched:
    popen: subprocess.Popen[bytes]
    addresses: dict[str, str]  # module -> 127.0.0.1:PORT
    stderr: Path
    # Every process seen under the launcher. Each service and each ffmpeg leads a session of
    # its own, which holds whatever it started, even once it was handed to another parent.
    seen: set[int] = field(default_factory=set)

    def services(self) -> dict[str, int]:
        """The launcher's live service processes now: module -> pid."""
        found = {}
        for pid in child_pids(self.popen.pid):
            module = module_of(pid)
            if module in MODULES and not gone(pid):
                found[module] = pid
        self.seen.update(found.values())
        return found

    def serving(self, module: str) -> bool:
        return PROBES[module](self.addresses[module])

    def healthy(self) -> dict[str, int] | None:
        """module -> pid once all three run and answer their health checks."""
        if self.popen.poll() is not None:
            raise AssertionError(
                f"the launcher exited ({self.popen.returncode}):\n{self.stderr.read_text()}"
            )
        services = self.services()
        if len(services) == len(MODULES) and all(self.serving(module) for module in MODULES):
            return services
        return None

    def wait_healthy(self) -> dict[str, int]:
        return poll_until(self.healthy, "the launcher's three services to be healthy", within=90)

    def descendants(self) -> list[int]:
        """The live processes under the launcher now (services, and their ffmpeg)."""
        found, parents = [], [self.popen.pid]
        while parents:
            children = [pid for pid in child_pids(parents.pop()) if not gone(pid)]
            found.extend(children)
            parents.extend(children)
        self.seen.update(found)
        return found

    def everything(self) -> list[int]:
        """Every live process of the sessions of the processes seen under the launcher."""
        return session_members(self.seen)

    def ports_free(self) -> bool:
        """Nothing listens on any of the services' ports (a bind succeeds)."""
        for address in self.addresses.values():
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", int(address.rpartition(":")[2])))
                    probe.listen()
                except OSError:
                    return False
        return True


@contextmanager
def run_stack(
    tmp_path: Path, *args: str, stdout: int | IO[bytes] = subprocess.DEVNULL
) -> Iterator[Launched]:
    """``scripts/run_stack.py ARGS`` with its three processes on free ports, its data under
    ``tmp_path``, its stderr in ``tmp_path / "stderr"``. At the end whatever still runs is
    killed: the launcher, then every process of the services' sessions."""
    addresses = {module: f"127.0.0.1:{free_port()}" for module in MODULES}
    command: Sequence[str] = [
        sys.executable, "scripts/run_stack.py",
        "--render-listen", addresses["render_service"],
        "--export-listen", addresses["export_service"],
        "--gateway-listen", addresses["gateway"],
        "--var-dir", str(tmp_path / "var"),
        *args,
    ]  # fmt: skip
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as errors:
        popen = subprocess.Popen(command, cwd=REPO_ROOT, stdout=stdout, stderr=errors)
    launched = Launched(popen, addresses, stderr)
    try:
        yield launched
    finally:
        if popen.poll() is None:
            launched.descendants()
            popen.kill()
            popen.wait()
        for pid in launched.everything():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
