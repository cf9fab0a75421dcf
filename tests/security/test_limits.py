"""Limits under concurrent load: past the export service's --max-active-jobs every excess
request is 429 JSON (RESOURCE_EXHAUSTED), never a 5xx, never more jobs than the limit, and the
services stay healthy.

The export service here points at a render address where nothing listens, so its jobs stay
queued (active) for the whole test without rendering anything.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import start_gateway, stop_all, tiny_spec
from tests.security.conftest import (
    EXPORT_SERVICE,
    SERVING,
    export_args,
    health_status,
    unused_address,
)
from tests.support.processes import ServiceProcess, start_service

MAX_ACTIVE_JOBS = 3
CONCURRENT_POSTS = 24


@dataclass
class LimitedStack:
    export: ServiceProcess
    gateway: ServiceProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.port}"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedStack]:
    root: Path = tmp_path_factory.mktemp("limits")
    export = start_service(
        "export_service",
        export_args(
            unused_address(), root / "export.db",
            "--max-active-jobs", str(MAX_ACTIVE_JOBS), "--max-attempts", "1000",
        ),
    )  # fmt: skip
    gateway = start_gateway(export.address)
    yield LimitedStack(export, gateway)
    stop_all([gateway, export])


async def post_job(http: httpx.AsyncClient, index: int) -> httpx.Response:
    return await http.post(
        "/api/jobs", json=tiny_spec(), headers={"Idempotency-Key": f"limit-{index}"}
    )


async def test_concurrent_creates_past_the_active_job_limit_are_429(
    limited: LimitedStack,
) -> None:
    async with httpx.AsyncClient(base_url=limited.url, timeout=30) as http:
        responses = await asyncio.gather(
            *(post_job(http, index) for index in range(CONCURRENT_POSTS))
        )
        statuses = Counter(response.status_code for response in responses)
        assert statuses == {201: MAX_ACTIVE_JOBS, 429: CONCURRENT_POSTS - MAX_ACTIVE_JOBS}, statuses
        for response in responses:
            if response.status_code == 429:
                body = response.json()
                assert body["code"] == "resource_exhausted", body
                assert f"the limit is {MAX_ACTIVE_JOBS}" in body["message"], body

        listed = (await http.get("/api/jobs", params={"limit": 100})).json()["jobs"]
        assert len(listed) == MAX_ACTIVE_JOBS
        assert {job["status"] for job in listed} == {"queued"}

        # A request id already accepted still returns its job at the limit (idempotency wins).
        accepted = next(r for r in responses if r.status_code == 201)
        index = responses.index(accepted)
        again = await post_job(http, index)
        assert again.status_code == 201 and again.json()["id"] == accepted.json()["id"]

        assert (await http.get("/healthz")).status_code == 200
    assert limited.export.alive() and limited.gateway.alive()
    assert health_status(limited.export.address, EXPORT_SERVICE) == SERVING
