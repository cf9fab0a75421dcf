"""A waiting job's queuePosition and estimatedStartAt over HTTP, the app in-process over an
in-process export service whose render service never answers (tests.gateway.inprocess): the
jobs wait in that render service's line in the order they were placed, with no estimate (a
render service that does not answer says nothing of its slots); the list shows the same; the
fields are the OpenAPI document's. (With renders that run and complete: tests/export/
test_queue_position.py over gRPC, and the page's test in chromium.)"""

from __future__ import annotations

from typing import Any

import httpx

from gateway.openapi import COMPONENT_SCHEMAS
from tests.gateway.conftest import tiny_spec
from tests.support.polling import wait_until


async def create(client: httpx.AsyncClient) -> Any:
    response = await client.post("/api/jobs", json=tiny_spec())
    assert response.status_code == 201, response.text
    return response.json()


async def test_waiting_jobs_say_their_place_and_no_invented_start(
    gateway_over_export: httpx.AsyncClient,
) -> None:
    client = gateway_over_export
    created = [await create(client) for _ in range(3)]
    ids = [job["id"] for job in created]
    seen: dict[str, Any] = {}

    async def all_placed() -> bool:
        for job_id in ids:
            response = await client.get(f"/api/jobs/{job_id}")
            assert response.status_code == 200, response.text
            seen[job_id] = response.json()
        return all(job["queuePosition"] is not None for job in seen.values())

    # Each job's tracker places it on the (only) render service, then keeps asking it.
    await wait_until(all_placed, "every job to be placed in the render service's line")
    assert [seen[job_id]["queuePosition"] for job_id in ids] == [1, 2, 3]
    for job in seen.values():
        assert job["status"] == "queued"
        assert job["estimatedStartAt"] is None, job
        assert {"queuePosition", "estimatedStartAt"} <= set(COMPONENT_SCHEMAS["Job"]["properties"])

    listed = (await client.get("/api/jobs", params={"status": "queued"})).json()["jobs"]
    assert {job["id"]: job["queuePosition"] for job in listed} == {
        job_id: position for position, job_id in enumerate(ids, start=1)
    }

    # Leaving the line: a cancelled job has no place, the ones behind it move up.
    cancelled = (await client.post(f"/api/jobs/{ids[0]}/cancel")).json()
    assert cancelled["queuePosition"] is None and cancelled["estimatedStartAt"] is None

    async def moved_up() -> bool:
        positions = [(await client.get(f"/api/jobs/{job_id}")).json() for job_id in ids[1:]]
        return [job["queuePosition"] for job in positions] == [1, 2]

    await wait_until(moved_up, "the jobs behind the cancelled one to move up")
