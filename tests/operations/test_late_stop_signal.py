"""A stop signal that reaches a service after it stopped changes nothing: the launcher stops a
render service with SIGTERM and then SIGINT (to cut its drain short), and on a loaded machine
the second may arrive only once the service's event loop is done with it. asyncio has then
given SIGINT back to Python's KeyboardInterrupt, and a clean stop ended as death by SIGINT
(exit -2), seen when the suite ran in parallel."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import asyncio, os, signal, sys
import uvloop
from videojob.stop_signals import on_stop_signal, run_service

async def serve():
    stopped = asyncio.Event()
    on_stop_signal(stopped.set)
    os.kill(os.getpid(), signal.SIGTERM)
    await stopped.wait()
    return 0

status = {run}(serve())
os.kill(os.getpid(), signal.SIGINT)  # the launcher's second signal, late
sys.exit(status)
"""


def exit_status(run: str) -> int:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(run=run)], capture_output=True, timeout=60
    ).returncode


def test_a_stop_signal_after_the_service_stopped_leaves_its_exit_clean() -> None:
    assert exit_status("run_service") == 0


def test_on_uvloop_too() -> None:
    """The export service runs on uvloop."""
    assert exit_status("(lambda main: run_service(main, loop_factory=uvloop.new_event_loop))") == 0


def test_with_asyncio_run_alone_the_late_signal_kills() -> None:
    """What run_service prevents, shown on asyncio.run: the test above can fail."""
    assert exit_status("asyncio.run") == -2
