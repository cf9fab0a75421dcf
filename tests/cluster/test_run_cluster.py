"""scripts/run_stack.py as ``make run-cluster`` runs it: it creates the PostgreSQL database when
missing, starts a render service, two export replicas and a gateway given both, names what it
started, serves jobs, starts a replica that was killed again on its port while the others keep
running, and Ctrl-C stops every process. With ``--storage s3`` (``make run-cluster
STORAGE=s3``) it starts a SeaweedFS too and the jobs' outputs are objects there."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import tiny_spec
from tests.support.polling import poll_until
from tests.support.postgres import drop_run_database, run_sync, with_database
from tests.support.processes import REPO_ROOT, child_pids, gone
from videojob_launcher import EXPORT_SERVICE, grpc_serving

pytestmark = pytest.mark.postgresql

UP = re.compile(r"videojob is up: open (?P<url>http://\S+)")
STORE = re.compile(
    r"object store: SeaweedFS at (?P<endpoint>http://\S+), bucket (?P<bucket>\S+) .*"
    r"its AWS_\* variables are in (?P<variables>\S+)$",
    re.MULTILINE,
)
LISTED = re.compile(
    r"^\s+(?P<name>[a-z]+(-\d+)?)\s+(?P<address>127\.0\.0\.1:\d+)\s+pid (?P<pid>\d+)$"
)


@pytest.fixture
def new_database(postgres_database: str) -> Iterator[str]:
    """The URL of a database that does not exist yet (dropped at the end)."""
    url = with_database(postgres_database, f"videojob_cluster_{secrets.token_hex(4)}")
    yield url
    run_sync(drop_run_database(url))


class RunningScript:
    """scripts/run_stack.py started with ``args`` on free ports and a var directory of the
    test's, its output read into ``lines`` as it comes."""

    def __init__(self, var_dir: Path, *args: str) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "VIDEOJOB_RENDER_LISTEN": "127.0.0.1:0",
            "VIDEOJOB_EXPORT_LISTEN": "127.0.0.1:0",
            "VIDEOJOB_GATEWAY_LISTEN": "127.0.0.1:0",
            "VIDEOJOB_VAR_DIR": str(var_dir),
        }
        self.process = subprocess.Popen(
            [sys.executable, "scripts/run_stack.py", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.up = threading.Event()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if UP.search(line):
                self.up.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_up(self) -> dict[str, tuple[str, int]]:
        """Once it says it is up: every process it listed, by name (address, pid)."""
        assert self.up.wait(timeout=90), self.output
        return {
            match["name"]: (match["address"], int(match["pid"]))
            for line in self.lines
            if (match := LISTED.match(line.rstrip("\n")))
        }

    @property
    def url(self) -> str:
        return next(match["url"] for line in self.lines if (match := UP.search(line)))

    def interrupt(self) -> None:
        """Ctrl-C: it stops everything and exits 0."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.wait(timeout=30) == 0, self.output
        self.reader.join(timeout=10)
        assert "videojob stopped" in self.output

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def run_script(var_dir: Path, *args: str) -> Iterator[RunningScript]:
    running = RunningScript(var_dir, *args)
    try:
        yield running
    finally:
        running.close()


def completed_job(url: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A job created through the gateway at ``url``, once it is terminal."""
    with httpx.Client(base_url=url, timeout=30) as http:
        created = http.post("/api/jobs", json=spec)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = http.get(f"/api/jobs/{job_id}").json()
            return job if job["status"] in ("completed", "failed", "cancelled") else None

        return poll_until(finished, "the job to finish", within=90)


def test_run_cluster_creates_the_database_and_starts_two_replicas(
    tmp_path: Path, new_database: str
) -> None:
    command = ("--database", new_database, "--create-database", "--exports", "2")
    with run_script(tmp_path / "var", *command) as script:
        listed = script.wait_up()
        assert "created the database" in script.output
        assert set(listed) == {"render", "export-1", "export-2", "gateway"}, script.output
        process = script.process
        assert sorted(child_pids(process.pid)) == sorted(pid for _, pid in listed.values())
        assert completed_job(script.url, tiny_spec())["status"] == "completed"

        # kill -9 of one replica: it is started again on its address, the others keep running.
        address, killed = listed["export-2"]
        os.kill(killed, signal.SIGKILL)
        serving = grpc_serving(EXPORT_SERVICE)

        def replaced() -> list[int] | None:
            assert process.poll() is None, script.output
            children = sorted(child_pids(process.pid))
            return children if killed not in children and serving(address) else None

        children = poll_until(replaced, "export-2 to serve again on its address")
        others = [pid for name, (_, pid) in listed.items() if name != "export-2"]
        assert len(children) == 4 and set(others) < set(children), (children, listed)
        script.interrupt()


@pytest.mark.object_store
def test_run_cluster_with_s3_storage_starts_seaweedfs_and_serves_a_job_from_it(
    tmp_path: Path, new_database: str
) -> None:
    """``make run-cluster STORAGE=s3``: a SeaweedFS of the run (its data in the var directory)
    named in the start-up lines, two render services and no directory shared by two processes;
    a job's output is an object there, downloaded through the gateway with the SHA-256 the job
    records; Ctrl-C stops the store too."""
    var_dir = tmp_path / "var"
    command = ("--database", new_database, "--create-database", "--exports", "2")
    with run_script(var_dir, *command, "--renders", "2", "--storage", "s3") as script:
        listed = script.wait_up()
        assert set(listed) == {
            "seaweedfs", "render-1", "render-2", "export-1", "export-2", "gateway",
        }, script.output  # fmt: skip
        store = STORE.search(script.output)
        assert store is not None, script.output
        assert store["endpoint"] == f"http://{listed['seaweedfs'][0]}"
        assert store["bucket"] == "videojob"
        variables = dict(
            line.split("=", 1) for line in Path(store["variables"]).read_text().splitlines()
        )
        assert variables["AWS_ENDPOINT_URL"] == store["endpoint"]
        assert Path(store["variables"]).stat().st_mode & 0o077 == 0
        process = script.process
        assert sorted(child_pids(process.pid)) == sorted(pid for _, pid in listed.values())
        assert (var_dir / "seaweedfs" / "data").is_dir()
        # Each render service renders in a scratch directory of its own.
        scratch = {
            name: _flag_value(pid, "--scratch-dir")
            for name, (_, pid) in listed.items()
            if name.startswith("render")
        }
        assert len(set(scratch.values())) == 2, scratch
        assert not (var_dir / "renders").exists() and not (var_dir / "media").exists()

        job = completed_job(script.url, tiny_spec())
        assert job["status"] == "completed", job
        assert job["outputPath"].startswith("s3://videojob/renders/"), job
        with httpx.Client(base_url=script.url, timeout=30) as http:
            download = http.get(f"/api/jobs/{job['id']}/download")
        assert download.status_code == 200, download.text
        assert hashlib.sha256(download.content).hexdigest() == job["outputSha256"]
        script.interrupt()
        assert gone(listed["seaweedfs"][1])


def _flag_value(pid: int, flag: str) -> str:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return argv[argv.index(flag) + 1]


@pytest.mark.object_store
def test_the_object_store_exiting_stops_the_run_with_status_1(tmp_path: Path) -> None:
    """The services cannot work without their store: when it dies, everything is stopped (no
    restart of it behind the user's back) and the run says why."""
    with run_script(tmp_path / "var", "--storage", "s3") as script:
        listed = script.wait_up()
        services = [pid for name, (_, pid) in listed.items() if name != "seaweedfs"]
        os.kill(listed["seaweedfs"][1], signal.SIGKILL)
        assert script.process.wait(timeout=60) == 1, script.output
        script.reader.join(timeout=10)
        assert "the object store exited" in script.output
        assert all(gone(pid) for pid in services), services
