"""Health that tells the truth, with real processes (render service, export service, gateway):

- the export service's overall health (service "") is NOT_SERVING while its PostgreSQL database
  is down, found without any request (its heartbeat asks), and SERVING again when it is back;
  the gateway's /readyz answers 503 meanwhile and when the export service itself is down, while
  /livez stays 200;
- render services down are reported under ``videojob.export.v1.ExportService/render`` and by
  /healthz, never by the overall health: CreateExport still accepts jobs, which run once a
  render service is back;
- the page's status badge tells the two apart (chromium).

SQLite is not tested for an unreachable database: the service opens the file (and its WAL and
shared-memory files) once and keeps them open, so renaming the file, replacing it by a directory
or making its directory unreadable changes nothing for the running service. Only failing I/O
(a full or broken disk) makes it unavailable, which the store tests cover at the store level.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from export_service.render_health import render_health_name
from export_service.server import SERVICE_NAME
from tests.support.polling import poll_until
from tests.support.postgres import ThrowawayCluster
from tests.support.processes import ServiceProcess, start_service
from tests.support.render_dirs import RenderDirs

RENDER_HEALTH = render_health_name(SERVICE_NAME)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TINY_SPEC = {
    "source": {"testPattern": {"durationSeconds": 1, "width": 160, "height": 120, "fps": 10}},
    "output": {"container": "mp4", "videoCodec": "h264", "preset": "ultrafast"},
}
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Stack:
    render: ServiceProcess
    export: ServiceProcess
    gateway: ServiceProcess

    @property
    def url(self) -> str:
        return f"http://{self.gateway.address}"

    def health(self, service: str) -> int | None:
        """The export service's health of ``service``; None when it does not answer."""
        with grpc.insecure_channel(self.export.address) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=5
                )
            except grpc.RpcError:
                return None
        return int(answer.status)

    def wait_health(self, service: str, status: int) -> None:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        poll_until(lambda: self.health(service) == status, f"health of {service!r} to be {name}")


def start_stack(tmp_path: Path, database: str) -> Iterator[Stack]:
    dirs = RenderDirs.create(tmp_path, output_name="out")
    started: list[ServiceProcess] = []
    try:
        render = start_service(
            "render_service",
            ["--listen", "127.0.0.1:0", "--output-dir", str(dirs.output),
             "--media-root", str(dirs.media)],
        )  # fmt: skip
        started.append(render)
        export = start_service(
            "export_service",
            ["--listen", "127.0.0.1:0", "--render-addr", render.address,
             "--database", database, "--backoff-initial", "0.2", "--backoff-max", "0.5"],
        )  # fmt: skip
        started.append(export)
        gateway = start_service(
            "gateway", ["--listen", "127.0.0.1:0", "--export-addr", export.address]
        )
        started.append(gateway)
        yield Stack(render, export, gateway)
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    throwaway = ThrowawayCluster()
    try:
        throwaway.init()
        throwaway.start()
        yield throwaway
    finally:
        throwaway.destroy()


@pytest.fixture
def postgres_stack(tmp_path: Path, cluster: ThrowawayCluster) -> Iterator[Stack]:
    yield from start_stack(tmp_path, cluster.url)


@pytest.fixture
def sqlite_stack(tmp_path: Path) -> Iterator[Stack]:
    yield from start_stack(tmp_path, str(tmp_path / "jobs.db"))


def readyz(http: httpx.Client) -> tuple[int, str]:
    answer = http.get("/readyz")
    return answer.status_code, answer.json()["export"]


@pytest.mark.postgresql
def test_database_down_is_not_serving_and_readyz_follows(
    postgres_stack: Stack, cluster: ThrowawayCluster
) -> None:
    stack = postgres_stack
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        assert readyz(http) == (200, "SERVING")
        assert stack.health("") == SERVING

        cluster.stop("fast")
        # No request reaches the database: the replica's own heartbeat finds it gone.
        stack.wait_health("", NOT_SERVING)
        assert stack.health(SERVICE_NAME) == NOT_SERVING
        assert readyz(http) == (503, "NOT_SERVING")
        assert http.get("/livez").status_code == 200
        healthz = http.get("/healthz")
        assert healthz.status_code == 503 and healthz.json()["export"] == "NOT_SERVING"

        cluster.start()
        stack.wait_health("", SERVING)
        assert stack.health(SERVICE_NAME) == SERVING
        assert readyz(http) == (200, "SERVING")
        job = http.post("/api/jobs", json=TINY_SPEC)
        assert job.status_code == 201, job.text

        stack.export.stop()
        assert readyz(http) == (503, "UNREACHABLE")
        assert http.get("/healthz").json()["export"] == "UNREACHABLE"
        assert http.get("/livez").status_code == 200


def wait_terminal(http: httpx.Client, job_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/api/jobs/{job_id}").json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return poll_until(finished, f"job {job_id} to finish")


def test_renders_down_is_reported_apart_and_jobs_are_still_accepted(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        stack.wait_health(RENDER_HEALTH, SERVING)
        assert http.get("/healthz").json()["renders"] == "SERVING"

        stack.render.stop()
        stack.wait_health(RENDER_HEALTH, NOT_SERVING)
        assert stack.health("") == SERVING
        assert stack.health(SERVICE_NAME) == SERVING
        healthz = http.get("/healthz")
        assert healthz.status_code == 200
        assert healthz.json()["renders"] == "NOT_SERVING"
        assert readyz(http) == (200, "SERVING")
        created = http.post("/api/jobs", json=TINY_SPEC)
        assert created.status_code == 201, created.text
        assert created.json()["status"] == "queued"

        stack.render.start()
        stack.wait_health(RENDER_HEALTH, SERVING)
        assert http.get("/healthz").json()["renders"] == "SERVING"
        assert wait_terminal(http, created.json()["id"])["status"] == "completed"


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing")
def test_the_page_badge_tells_renders_down_from_the_service_down(sqlite_stack: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.gateway.test_browser import CHROMIUM_ARGS

    stack = sqlite_stack
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            badge = page.locator("#health")
            stack.wait_health(RENDER_HEALTH, SERVING)
            page.goto(stack.url + "/")
            expect(badge).to_have_attribute("data-state", "ok")
            expect(badge).to_have_text("service up")

            stack.render.stop()
            stack.wait_health(RENDER_HEALTH, NOT_SERVING)
            page.reload()  # the badge asks /healthz at load, then every few seconds
            expect(badge).to_have_attribute("data-state", "degraded")
            expect(badge).to_have_text("service up, renders unreachable")

            stack.export.stop()
            page.reload()
            expect(badge).to_have_attribute("data-state", "down")
            expect(badge).to_have_text("service unreachable")
        finally:
            browser.close()
