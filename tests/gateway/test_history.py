"""GET /api/jobs/{id}/history over HTTP against the real stack: a completed job's committed
changes, create to complete, paged by afterVersion; unknown ids (over an in-process export
service) and bad parameters (before any call: the gateway alone) refused as docs/api.md's error
table says, the app in-process (tests.gateway.inprocess)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.openapi import COMPONENT_SCHEMAS, MAX_VERSION
from videojob import limits


def history(client: httpx.Client, job_id: str, **params: Any) -> Any:
    response = client.get(f"/api/jobs/{job_id}/history", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(body) == sorted(COMPONENT_SCHEMAS["JobHistory"]["required"]), body
    for entry in body["entries"]:
        assert sorted(entry) == sorted(COMPONENT_SCHEMAS["HistoryEntry"]["required"]), entry
    return body


def test_a_completed_jobs_history_runs_from_create_to_complete(
    client: httpx.Client, completed_job: Any
) -> None:
    page = history(client, completed_job["id"])
    entries = page["entries"]
    assert page["nextAfterVersion"] is None
    assert [entry["version"] for entry in entries] == list(range(1, completed_job["version"] + 1))
    first, last = entries[0], entries[-1]
    assert (first["change"], first["status"], first["attempt"]) == ("create", "queued", 1)
    assert (last["change"], last["status"], last["progress"], last["stage"]) == (
        "complete",
        "completed",
        100,
        "Complete",
    )
    assert last["time"] == completed_job["updatedAt"]
    assert last["errorCode"] is None and last["writer"]
    times = [entry["time"] for entry in entries]
    assert times == sorted(times)
    # Between them only progress: queued while the render waits for a slot, then running.
    middle = entries[1:-1]
    assert all(entry["change"] == "progress" for entry in middle), middle
    statuses = [entry["status"] for entry in middle]
    assert statuses == sorted(statuses, key=["queued", "running"].index), statuses


def test_paging_with_limit_1_walks_every_version(client: httpx.Client, completed_job: Any) -> None:
    whole = history(client, completed_job["id"])["entries"]
    walked: list[Any] = []
    after = 0
    while True:
        page = history(client, completed_job["id"], limit=1, afterVersion=after)
        assert len(page["entries"]) == 1, page
        walked += page["entries"]
        if page["nextAfterVersion"] is None:
            break
        assert page["nextAfterVersion"] == page["entries"][0]["version"]
        after = page["nextAfterVersion"]
    assert walked == whole
    beyond = history(client, completed_job["id"], afterVersion=completed_job["version"])
    assert beyond == {"entries": [], "nextAfterVersion": None}


async def test_an_unknown_job_has_no_history(gateway_over_export: httpx.AsyncClient) -> None:
    response = await gateway_over_export.get("/api/jobs/no-such-job/history")
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"limit": "0"}, 422, "limit"),
        ({"limit": str(limits.MAX_HISTORY_LIMIT + 1)}, 422, "limit"),
        ({"limit": "9" * 5000}, 422, "limit"),
        ({"limit": "ten"}, 400, "limit"),
        ({"limit": ""}, 400, "limit"),
        ({"afterVersion": "-1"}, 422, "afterVersion"),
        ({"afterVersion": str(MAX_VERSION + 1)}, 422, "afterVersion"),
        ({"afterVersion": "1.5"}, 400, "afterVersion"),
    ],
)
async def test_a_bad_parameter_is_refused_naming_it(
    gateway_alone: httpx.AsyncClient, params: dict[str, str], status: int, field: str
) -> None:
    # Refused before any call: with no export service behind the gateway, a request that got
    # further would be 503.
    response = await gateway_alone.get("/api/jobs/some-job/history", params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["code"], body["field"]) == ("invalid_argument", field), body
    assert body["message"].startswith(f"{field}: "), body
