"""Ctrl-C stops every process even when the launcher's stdout leads nowhere any more (``make
run | tee log``: the terminal's Ctrl-C ends tee too, and each write then fails with EPIPE)."""

from __future__ import annotations

import os
import select
import signal
import threading
from pathlib import Path

import httpx

from tests.gateway.conftest import LONG_SPEC, create_job
from tests.launcher.launched import run_stack
from tests.support.polling import poll_until
from tests.support.processes import module_of


class PipeReader:
    """Reads (and forgets) what comes through a pipe until ``close`` closes its read end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while not self.closing.is_set():
                ready, _, _ = select.select([self.fd], [], [], 0.05)
                if ready and not os.read(self.fd, 65536):
                    break
        finally:
            os.close(self.fd)

    def close(self) -> None:
        self.closing.set()
        self.thread.join()


def test_ctrl_c_with_stdout_closed_stops_every_process(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    reader = PipeReader(read_end)
    try:
        with run_stack(tmp_path, stdout=write_end) as launched:
            os.close(write_end)
            services = launched.wait_healthy()
            gateway = launched.addresses["gateway"]
            with httpx.Client(base_url=f"http://{gateway}", timeout=30) as http:
                create_job(http, LONG_SPEC)

            def ffmpeg() -> list[int] | None:
                found = launched.descendants()
                return [pid for pid in found if module_of(pid).startswith("ffmpeg")] or None

            poll_until(ffmpeg, "ffmpeg to render the job")
            assert len(launched.everything()) > len(services)

            reader.close()  # what read the launcher's output is gone
            launched.popen.send_signal(signal.SIGINT)
            status = launched.popen.wait(timeout=90)
            poll_until(lambda: launched.everything() == [], "every process to be gone", within=30)
            assert launched.ports_free()
            assert status == 0, launched.stderr.read_text()
    finally:
        reader.close()
