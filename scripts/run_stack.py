"""Start the render service, the export service and the gateway together (``make run``).

Waits for each one's ``listening on HOST:PORT`` line, prints the page's URL, relays their
output with a name prefix, and on Ctrl-C / SIGTERM (or when one of them exits) stops all
three: SIGTERM, then SIGKILL after a grace period. Ports may be 0 (each prints what it bound).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+)")
READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0


class Child:
    def __init__(self, name: str, module: str, args: Sequence[str]) -> None:
        self.name = name
        self.address: str | None = None
        self.ready = threading.Event()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Own session: a terminal's Ctrl-C reaches only this script, which stops the
            # children in order.
            start_new_session=True,
        )
        threading.Thread(target=self._relay, name=f"relay-{name}", daemon=True).start()

    def _relay(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            sys.stdout.write(f"[{self.name}] {line}")
            sys.stdout.flush()
            match = LISTENING.search(line)
            if match and not self.ready.is_set():
                self.address = f"{match['host']}:{match['port']}"
                self.ready.set()
        self.ready.set()

    def wait_ready(self, stop: threading.Event) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not self.ready.wait(timeout=0.1):
            if stop.is_set():
                raise RuntimeError("stopped while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start in {READY_TIMEOUT_SECONDS:.0f} s")
        if self.address is None:
            raise RuntimeError(f"{self.name} exited before listening (status {self.popen.poll()})")
        return self.address

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        try:
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{self.name} ignored SIGTERM; killing it", file=sys.stderr, flush=True)
            self.popen.kill()
            self.popen.wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--render-listen", default=env("VIDEOJOB_RENDER_LISTEN", "127.0.0.1:50051"))
    parser.add_argument("--export-listen", default=env("VIDEOJOB_EXPORT_LISTEN", "127.0.0.1:50052"))
    parser.add_argument(
        "--gateway-listen", default=env("VIDEOJOB_GATEWAY_LISTEN", "127.0.0.1:8080")
    )
    parser.add_argument(
        "--var-dir",
        default=env("VIDEOJOB_VAR_DIR", "var"),
        help="renders, media and the SQLite database live here (relative to the repository)",
    )
    return parser.parse_args(argv)


def stop_all(children: Sequence[Child]) -> None:
    # Front to back: the gateway first, so no new work arrives while the others stop.
    for child in reversed(children):
        child.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in reversed(children):
        child.wait_or_kill(deadline)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    var_dir = (REPO_ROOT / args.var_dir).resolve()
    (var_dir / "renders").mkdir(parents=True, exist_ok=True)
    (var_dir / "media").mkdir(parents=True, exist_ok=True)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    children: list[Child] = []
    status = 0
    try:
        render = Child(
            "render",
            "render_service",
            [
                "--listen",
                args.render_listen,
                "--output-dir",
                str(var_dir / "renders"),
                "--media-root",
                str(var_dir / "media"),
            ],
        )
        children.append(render)
        render_addr = render.wait_ready(stop)
        export = Child(
            "export",
            "export_service",
            [
                "--listen",
                args.export_listen,
                "--render-addr",
                render_addr,
                "--database",
                f"sqlite:///{var_dir / 'export.db'}",
            ],
        )
        children.append(export)
        export_addr = export.wait_ready(stop)
        gateway = Child(
            "gateway", "gateway", ["--listen", args.gateway_listen, "--export-addr", export_addr]
        )
        children.append(gateway)
        gateway_addr = gateway.wait_ready(stop)
        print(f"videojob is up: open http://{gateway_addr}/", flush=True)
        print("Ctrl-C stops all three", flush=True)
        while not stop.wait(timeout=0.2):
            exited = [child for child in children if not child.alive()]
            if exited:
                print(
                    f"{exited[0].name} exited with status {exited[0].popen.returncode}; "
                    "stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
                status = 1
                break
    except RuntimeError as error:
        if not stop.is_set():
            print(f"videojob could not start: {error}", file=sys.stderr, flush=True)
            status = 1
    finally:
        print("stopping videojob…", flush=True)
        stop_all(children)
    print("videojob stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
