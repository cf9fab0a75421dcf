"""GET /api/jobs/{id}/events, read as a raw stream: names, ids, order, resume, keep-alive."""

from __future__ import annotations

import uuid

import httpx

from tests.gateway.conftest import (
    LONG_SPEC,
    TERMINAL,
    create_job,
    tiny_spec,
    wait_for,
    wait_terminal,
)
from tests.gateway.sse_client import Frame, events, frames


def read_all(http: httpx.Client, job_id: str, **headers: str) -> list[Frame]:
    with http.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        return list(events(response))


def test_stream_headers_and_event_order(client: httpx.Client) -> None:
    job = create_job(client, tiny_spec(2.0))
    with client.stream(
        "GET", f"/api/jobs/{job['id']}/events", headers={"Accept-Encoding": "gzip"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in response.headers["cache-control"]
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        received = list(events(response))
    # The stream ended by itself after the terminal event.
    assert received, "no event"
    versions = [int(frame.id or "") for frame in received]
    assert versions == sorted(set(versions)), versions
    for frame in received:
        data = frame.job
        assert data["id"] == job["id"]
        assert data["version"] == int(frame.id or "")
        expected = data["status"] if data["status"] in TERMINAL else "progress"
        assert frame.event == expected
    assert [frame.event for frame in received[:-1]] == ["progress"] * (len(received) - 1)
    last = received[-1].job
    assert received[-1].event == "completed"
    assert last["progress"] == 100
    progress = [frame.job["progress"] for frame in received]
    assert progress == sorted(progress)
    # A client that polls sees the same final state.
    assert client.get(f"/api/jobs/{job['id']}").json() == last


def test_first_event_is_the_current_state(client: httpx.Client) -> None:
    job = create_job(client)
    finished = wait_terminal(client, job["id"])
    received = read_all(client, job["id"])
    assert len(received) == 1
    assert received[0].job == finished
    assert received[0].event == finished["status"]


def test_last_event_id_resumes_after_that_version(client: httpx.Client) -> None:
    job = create_job(client, tiny_spec(2.0))
    everything = read_all(client, job["id"])
    final = int(everything[-1].id or "")
    assert final >= 2
    middle = final - 1
    resumed = read_all(client, job["id"], **{"Last-Event-ID": str(middle)})
    assert [frame.id for frame in resumed] == [str(final)]
    assert resumed[0].event == "completed"
    from_query = client.stream("GET", f"/api/jobs/{job['id']}/events?lastEventId={middle}")
    with from_query as response:
        assert [frame.id for frame in events(response)] == [str(final)]
    # Nothing follows the terminal version: 204 tells EventSource to stop reconnecting.
    done = client.get(f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": str(final)})
    assert done.status_code == 204


def test_keep_alive_comments_while_nothing_changes_then_cancelled_ends_it(
    client: httpx.Client,
) -> None:
    job = create_job(client, LONG_SPEC)
    wait_for(client, job["id"], {"running"})
    seen: list[Frame] = []
    cancelled = False
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as response:
        for frame in frames(response):
            seen.append(frame)
            if "keep-alive" in frame.comments and not cancelled:
                cancel = client.post(f"/api/jobs/{job['id']}/cancel")
                assert cancel.status_code == 200, cancel.text
                cancelled = True
    assert seen[0].retry is not None
    assert any("keep-alive" in frame.comments for frame in seen)
    with_events = [frame for frame in seen if frame.data]
    assert with_events[-1].event == "cancelled"
    assert with_events[0].event == "progress"


async def test_bad_last_event_id_is_400(gateway_alone: httpx.AsyncClient) -> None:
    # Refused before any call: with no export service behind the gateway, a request that got
    # further would be 503.
    url = "/api/jobs/some-job/events"
    response = await gateway_alone.get(url, headers={"Last-Event-ID": "abc"})
    assert response.status_code == 400
    assert response.json()["field"] == "Last-Event-ID"
    response = await gateway_alone.get(url, params={"lastEventId": "-1"})
    assert response.status_code == 400
    assert response.json()["field"] == "lastEventId"


async def test_unknown_job_stream_is_404_json(gateway_over_export: httpx.AsyncClient) -> None:
    response = await gateway_over_export.get(f"/api/jobs/{uuid.uuid4()}/events")
    assert response.status_code == 404
    assert response.json()["message"]
