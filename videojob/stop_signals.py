"""The stop signals of a service process (SIGTERM, SIGINT), handled on its event loop. Only a
process's main installs them: one owner of signal handling per process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

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


def run_service(
    main: Coroutine[Any, Any, int],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> int:
    """``asyncio.run(main)`` for a service process's main: its exit status. Once ``main`` has
    returned (the service stopped), stop signals are ignored until the process exits, before the
    loop closes: a second stop signal a launcher sends a moment after the first (SIGTERM, then
    SIGINT to cut a drain short) may arrive only then, and must not turn a clean exit into death
    by KeyboardInterrupt, which is what SIGINT does once asyncio gives it back. ``loop_factory``:
    the event loop to run on (asyncio's own when None)."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            return runner.run(main)
        finally:
            loop = runner.get_loop()
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)
