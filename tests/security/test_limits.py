"""Limits under concurrent load: past the export service's --max-active-jobs every excess
request is 429 JSON (RESOURCE_EXHAUSTED), never a 5xx, never more jobs than the limit, and the
services stay healthy.

The export service here points at a render address where nothing listens, so its jobs stay
queued (active) for the whole test without rendering anything. It and the gateway run in the
test's process and event loop (tests.gateway.inprocess): the requests are as concurrent there
as against processes, each one a task of the loop both services serve from.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from export_service.config import TrackerSettings
from tests.gateway.conftest import tiny_spec
from tests.gateway.inprocess import app_client, gateway_settings, inprocess_export
from tests.security.conftest import EXPORT_SERVICE, SERVING, health_status

MAX_ACTIVE_JOBS = 3
CONCURRENT_POSTS = 24


@dataclass
class LimitedStack:
    export_address: str
    http: httpx.AsyncClient


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[LimitedStack]:
    tracker = TrackerSettings(max_attempts=1000)
    async with (
        inprocess_export(tmp_path, max_active_jobs=MAX_ACTIVE_JOBS, tracker=tracker) as export,
        app_client(gateway_settings(export)) as http,
    ):
        yield LimitedStack(export, http)


async def post_job(http: httpx.AsyncClient, index: int) -> httpx.Response:
    return await http.post(
        "/api/jobs", json=tiny_spec(), headers={"Idempotency-Key": f"limit-{index}"}
    )


async def test_concurrent_creates_past_the_active_job_limit_are_429(
    limited: LimitedStack,
) -> None:
    http = limited.http
    responses = await asyncio.gather(*(post_job(http, index) for index in range(CONCURRENT_POSTS)))
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

    # Both still serve: the gateway's health, and the export service's own (a blocking call,
    # from a thread while the loop serves it).
    assert (await http.get("/healthz")).status_code == 200
    served = await asyncio.to_thread(health_status, limited.export_address, EXPORT_SERVICE)
    assert served == SERVING
