"""A real stack for the gateway tests: render service, export service and gateway as real
processes on port 0, with the data in a temporary directory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import ServiceProcess, start_service

TERMINAL = {"completed", "failed", "cancelled"}
# Short, so that tests see keep-alive comments without waiting 15 s.
TEST_HEARTBEAT_SECONDS = "0.2"


@dataclass
class Stack:
    render: ServiceProcess
    export: ServiceProcess
    gateway: ServiceProcess
    output_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}"


def start_gateway(
    export_addr: str, *extra: str, env: dict[str, str] | None = None
) -> ServiceProcess:
    return start_service(
        "gateway",
        [
            "--listen",
            "127.0.0.1:0",
            "--export-addr",
            export_addr,
            "--heartbeat-seconds",
            TEST_HEARTBEAT_SECONDS,
            *extra,
        ],
        env=env,
    )


# Stopped processes are kept until the session ends: their stdout pipe is still being drained
# by a thread of tests.support.processes, and closing (or collecting) it earlier would race
# that thread or raise a ResourceWarning (an error here) in whichever test happens to run.
_STOPPED: list[ServiceProcess] = []


def stop(process: ServiceProcess) -> None:
    try:
        process.terminate()
    finally:
        _STOPPED.append(process)


def stop_all(processes: Sequence[ServiceProcess]) -> None:
    for process in processes:
        stop(process)


@pytest.fixture(scope="session", autouse=True)
def close_stopped_pipes() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 10
    for thread in threading.enumerate():
        if thread.name.startswith("drain-"):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in _STOPPED:
        if process.popen.stdout is not None and not any(
            t.name.startswith("drain-") for t in threading.enumerate()
        ):
            process.popen.stdout.close()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    output_dir = root / "renders"
    media_root = root / "media"
    output_dir.mkdir()
    media_root.mkdir()
    started: list[ServiceProcess] = []
    try:
        render = start_service(
            "render_service",
            [
                "--listen",
                "127.0.0.1:0",
                "--output-dir",
                str(output_dir),
                "--media-root",
                str(media_root),
            ],
        )
        started.append(render)
        export = start_service(
            "export_service",
            [
                "--listen",
                "127.0.0.1:0",
                "--render-addr",
                render.address,
                "--database",
                f"sqlite:///{root / 'export.db'}",
            ],
        )
        started.append(export)
        gateway = start_gateway(export.address)
        started.append(gateway)
        yield Stack(render=render, export=export, gateway=gateway, output_dir=output_dir)
    finally:
        stop_all(list(reversed(started)))


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        yield http


def tiny_spec(duration: float = 1.0, **output: Any) -> dict[str, Any]:
    return {
        "source": {
            "testPattern": {"durationSeconds": duration, "width": 160, "height": 120, "fps": 10}
        },
        "output": {"preset": "ultrafast", **output},
    }


# A render that runs until cancelled (an hour of video; the tests cancel it within seconds).
LONG_SPEC = tiny_spec(3600.0)


def create_job(http: httpx.Client, spec: dict[str, Any] | None = None, **headers: str) -> Any:
    response = http.post("/api/jobs", json=spec or tiny_spec(), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for(http: httpx.Client, job_id: str, statuses: set[str], timeout: float = 60) -> Any:
    """Polls GET /api/jobs/{id} until the job is in one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job never reached {statuses}: {job}"
        time.sleep(0.1)


def wait_terminal(http: httpx.Client, job_id: str, timeout: float = 60) -> Any:
    return wait_for(http, job_id, TERMINAL, timeout)


@pytest.fixture(scope="session")
def completed_job(stack: Stack) -> Any:
    """One finished tiny render, shared by the tests that only read it."""
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        job = create_job(http)
        finished = wait_terminal(http, job["id"])
    assert finished["status"] == "completed", finished
    return finished
