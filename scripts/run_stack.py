"""Start the render service, the export service and the gateway together (``make run``).

A thin command line over videojob.launcher: waits until each one is healthy, prints the page's
URL, relays their output with a name prefix, and on Ctrl-C / SIGTERM (or when one of them exits)
stops all three: SIGTERM, then SIGKILL after a grace period. Ports may be 0 (each prints what it
bound).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from videojob.launcher import LaunchError, Role, Stack, StackConfig

REPO_ROOT = Path(__file__).resolve().parents[1]

WATCH_INTERVAL_SECONDS = 0.2


class Interrupted(Exception):
    """Ctrl-C or SIGTERM while the processes were still starting."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
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


def relay(name: str, line: str) -> None:
    sys.stdout.write(f"[{name}] {line}")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    var_dir = (REPO_ROOT / args.var_dir).resolve()
    stack = Stack(
        StackConfig(
            workdir=var_dir,
            render=Role(listen=args.render_listen),
            export=Role(listen=args.export_listen),
            gateway=Role(listen=args.gateway_listen),
            echo=relay,
        )
    )
    stop = threading.Event()

    def interrupt_start(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt_start)
    status = 0
    try:
        stack.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, request_stop)
        print(f"videojob is up: open http://{stack.gateway.address}/", flush=True)
        print("Ctrl-C stops all three", flush=True)
        while not stop.wait(timeout=WATCH_INTERVAL_SECONDS):
            exited = [process for process in stack.processes if not process.alive()]
            if exited:
                print(
                    f"{exited[0].name} exited with status {exited[0].returncode}; "
                    "stopping the others",
                    file=sys.stderr,
                    flush=True,
                )
                status = 1
                break
    except Interrupted:
        pass
    except LaunchError as error:
        print(f"videojob could not start: {error}", file=sys.stderr, flush=True)
        status = 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, request_stop)
        print("stopping videojob…", flush=True)
        stack.stop()
    print("videojob stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
