"""The stop signals of a service process (SIGTERM, SIGINT), handled on its event loop. Only a
process's main installs them: one owner of signal handling per process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signal(callback: Callable[[], None]) -> None:
    """Calls ``callback`` on the running loop at each SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, callback)


async def stop_signalled() -> None:
    """Returns at the first SIGTERM or SIGINT."""
    stop = asyncio.Event()
    on_stop_signal(stop.set)
    await stop.wait()
