"""scripts/run_stack.py (make run): starts all three, serves the page, and Ctrl-C stops them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support.processes import REPO_ROOT, child_pids

UP = re.compile(r"videojob is up: open (?P<url>http://\S+)")


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_run_stack_starts_everything_and_ctrl_c_stops_all_three(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "VIDEOJOB_RENDER_LISTEN": "127.0.0.1:0",
        "VIDEOJOB_EXPORT_LISTEN": "127.0.0.1:0",
        "VIDEOJOB_GATEWAY_LISTEN": "127.0.0.1:0",
        "VIDEOJOB_VAR_DIR": str(tmp_path / "var"),
    }
    process = subprocess.Popen(
        [sys.executable, "scripts/run_stack.py"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    up = threading.Event()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if UP.search(line):
                up.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    children: list[int] = []
    try:
        assert up.wait(timeout=60), "".join(lines)
        url = next(match["url"] for line in lines if (match := UP.search(line)))
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200
        assert "videojob" in page.text
        assert httpx.get(url + "healthz", timeout=30).status_code == 200
        children = child_pids(process.pid)
        assert len(children) == 3, children

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, "".join(lines)
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in children):
            assert time.monotonic() < deadline, f"children still alive: {children}"
            time.sleep(0.05)
        reader.join(timeout=10)
        assert "videojob stopped" in "".join(lines)
        assert (tmp_path / "var" / "export.db").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in children:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
