"""scripts/run_stack.py as ``make run-cluster`` runs it: it creates the PostgreSQL database when
missing, starts a render service, two export replicas and a gateway given both, names what it
started, serves jobs, starts a replica that was killed again on its port while the others keep
running, and Ctrl-C stops every process."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import tiny_spec
from tests.support.polling import poll_until
from tests.support.postgres import drop_run_database, run_sync, with_database
from tests.support.processes import REPO_ROOT, child_pids
from videojob_launcher import EXPORT_SERVICE, grpc_serving

pytestmark = pytest.mark.postgresql

UP = re.compile(r"videojob is up: open (?P<url>http://\S+)")
LISTED = re.compile(
    r"^\s+(?P<name>[a-z]+(-\d+)?)\s+(?P<address>127\.0\.0\.1:\d+)\s+pid (?P<pid>\d+)$"
)


@pytest.fixture
def new_database(postgres_database: str) -> Iterator[str]:
    """The URL of a database that does not exist yet (dropped at the end)."""
    url = with_database(postgres_database, f"videojob_cluster_{secrets.token_hex(4)}")
    yield url
    run_sync(drop_run_database(url))


def test_run_cluster_creates_the_database_and_starts_two_replicas(
    tmp_path: Path, new_database: str
) -> None:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "VIDEOJOB_RENDER_LISTEN": "127.0.0.1:0",
        "VIDEOJOB_EXPORT_LISTEN": "127.0.0.1:0",
        "VIDEOJOB_GATEWAY_LISTEN": "127.0.0.1:0",
        "VIDEOJOB_VAR_DIR": str(tmp_path / "var"),
    }
    command = [
        sys.executable, "scripts/run_stack.py",
        "--database", new_database, "--create-database", "--exports", "2",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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
    try:
        assert up.wait(timeout=90), "".join(lines)
        output = "".join(lines)
        assert "created the database" in output
        listed = {
            match["name"]: (match["address"], int(match["pid"]))
            for line in lines
            if (match := LISTED.match(line.rstrip("\n")))
        }
        assert set(listed) == {"render", "export-1", "export-2", "gateway"}, output
        assert sorted(child_pids(process.pid)) == sorted(pid for _, pid in listed.values())
        url = next(match["url"] for line in lines if (match := UP.search(line)))
        with httpx.Client(base_url=url, timeout=30) as http:
            created = http.post("/api/jobs", json=tiny_spec())
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]

            def finished() -> str | None:
                status: str = http.get(f"/api/jobs/{job_id}").json()["status"]
                return status if status in ("completed", "failed", "cancelled") else None

            assert poll_until(finished, "the job to finish", within=90) == "completed"

        # kill -9 of one replica: it is started again on its address, the others keep running.
        address, killed = listed["export-2"]
        os.kill(killed, signal.SIGKILL)
        serving = grpc_serving(EXPORT_SERVICE)

        def replaced() -> list[int] | None:
            assert process.poll() is None, "".join(lines)
            children = sorted(child_pids(process.pid))
            return children if killed not in children and serving(address) else None

        children = poll_until(replaced, "export-2 to serve again on its address")
        others = [pid for name, (_, pid) in listed.items() if name != "export-2"]
        assert len(children) == 4 and set(others) < set(children), (children, listed)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, "".join(lines)
        reader.join(timeout=10)
        assert "videojob stopped" in "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
