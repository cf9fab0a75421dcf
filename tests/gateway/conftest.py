"""A real stack for the gateway tests: render service, export service and gateway as real
processes on port 0 (videojob_launcher), with the data in a temporary directory; and, for the
tests that need no other process, the app in-process (tests.gateway.inprocess)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest

from tests.gateway.inprocess import export_address as export_address
from tests.gateway.inprocess import gateway_alone as gateway_alone
from tests.gateway.inprocess import gateway_over_export as gateway_over_export
from tests.support.polling import poll_until
from videojob_launcher import Role, ServiceProcess, Stack, StackConfig, gateway_args, launch

__all__ = ["Stack"]

TERMINAL = {"completed", "failed", "cancelled"}
# Short, so that tests see keep-alive comments without waiting 15 s.
TEST_HEARTBEAT_SECONDS = "0.2"
GATEWAY_TEST_ARGS = ("--heartbeat-seconds", TEST_HEARTBEAT_SECONDS)


def start_gateway(
    export_addr: str, *extra: str, env: dict[str, str] | None = None
) -> ServiceProcess:
    """One more gateway on port 0, ready once it listens (``export_addr`` may lead nowhere)."""
    args = gateway_args("127.0.0.1:0", export_addr, *GATEWAY_TEST_ARGS, *extra)
    return launch("gateway", "gateway", args, env=env)


def stop(process: ServiceProcess) -> None:
    process.stop()


def stop_all(processes: Sequence[ServiceProcess]) -> None:
    for process in processes:
        process.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig(tmp_path_factory.mktemp("stack"), gateway=Role(args=GATEWAY_TEST_ARGS))
    with Stack(config) as running:
        yield running


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

    def reached() -> Any:
        response = http.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        return job if job["status"] in statuses else None

    return poll_until(reached, f"job {job_id} to be {sorted(statuses)}", timeout, 0.1)


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
