"""The gateway's request metrics (RED: rate, errors, duration) over real HTTP: the in-process
gateway served by uvicorn on a socket, over the in-process export service. Requests are counted
by method, route template and status code, never by raw path; an event stream is counted and
timed when its response starts, not when it ends; ``/metrics`` stays valid for promtool.

The metrics live in the process's registry, shared with the other tests of this process: every
check compares what ``/metrics`` shows after the requests with what it showed before."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.gateway.async_sse import StreamRecord, read_stream, wait_until
from tests.gateway.conftest import LONG_SPEC
from tests.gateway.inprocess import gateway_settings, served_gateway
from tests.support.prometheus_text import Sample, promtool_problems, samples

REQUESTS = "videojob_http_requests_total"
DURATION_COUNT = "videojob_http_request_duration_seconds_count"
TOKEN = "metrics-test-token"
# Only bounds the test when something hangs.
STREAM_END_TIMEOUT_SECONDS = 30


def requests_key(method: str, route: str, code: int) -> Sample:
    return (REQUESTS, frozenset({("method", method), ("route", route), ("code", str(code))}))


def duration_key(method: str, route: str) -> Sample:
    return (DURATION_COUNT, frozenset({("method", method), ("route", route)}))


def client_of(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=30)


async def scrape(http: httpx.AsyncClient) -> dict[Sample, float]:
    answer = await http.get("/metrics")
    assert answer.status_code == 200, answer.text
    return samples(answer.text)


def moved(before: dict[Sample, float], after: dict[Sample, float], key: Sample) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
async def http(export_address: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings(export_address)
    async with served_gateway(settings) as url, client_of(url) as client:
        yield client


async def test_requests_are_counted_by_route_template_and_status(
    http: httpx.AsyncClient,
) -> None:
    before = await scrape(http)
    created = await http.post("/api/jobs", json=LONG_SPEC)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    unknown_id = str(uuid.uuid4())
    assert (await http.get(f"/api/jobs/{job_id}")).status_code == 200
    assert (await http.get(f"/api/jobs/{unknown_id}")).status_code == 404
    assert (await http.get(f"/no/such/{unknown_id}")).status_code == 404
    assert (await http.put("/api/jobs", json={})).status_code == 405
    assert (await http.request("PROPFIND", "/api/jobs")).status_code == 405
    assert (await http.get("/static/app.js")).status_code == 200
    answer = await http.get("/metrics")
    after = samples(answer.text)

    assert moved(before, after, requests_key("POST", "/api/jobs", 201)) == 1
    assert moved(before, after, requests_key("GET", "/api/jobs/{id}", 200)) == 1
    assert moved(before, after, requests_key("GET", "/api/jobs/{id}", 404)) == 1
    assert moved(before, after, requests_key("GET", "unmatched", 404)) == 1
    assert moved(before, after, requests_key("PUT", "/api/jobs", 405)) == 1
    assert moved(before, after, requests_key("other", "/api/jobs", 405)) == 1
    assert moved(before, after, requests_key("GET", "/static/{path}", 200)) == 1
    assert moved(before, after, duration_key("GET", "/api/jobs/{id}")) == 2
    assert moved(before, after, duration_key("POST", "/api/jobs")) == 1
    # Labels name routes, never what was in the path.
    assert job_id not in answer.text and unknown_id not in answer.text
    assert promtool_problems(answer.text) == ""


async def test_an_event_stream_is_counted_and_timed_as_its_response_starts(
    http: httpx.AsyncClient,
) -> None:
    created = await http.post("/api/jobs", json=LONG_SPEC)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    before = await scrape(http)
    record = StreamRecord()
    # No render service answers the export service: the job stays queued, its stream open
    # until the job is cancelled.
    reading = asyncio.create_task(read_stream(http, job_id, record))
    try:
        await wait_until(lambda: record.first_event.is_set(), what="the stream's first event")
        while_open = await scrape(http)
        assert not record.ended
        cancelled = await http.post(f"/api/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        await asyncio.wait_for(reading, STREAM_END_TIMEOUT_SECONDS)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    after = await scrape(http)
    assert record.terminal is not None and record.terminal.name == "cancelled"

    stream_route = "/api/jobs/{id}/events"
    assert moved(before, while_open, requests_key("GET", stream_route, 200)) == 1
    assert moved(before, while_open, duration_key("GET", stream_route)) == 1
    # Its end neither counts nor times it again.
    assert moved(while_open, after, requests_key("GET", stream_route, 200)) == 0
    assert moved(while_open, after, duration_key("GET", stream_route)) == 0


async def test_refusals_of_the_middleware_are_counted_under_their_route(
    export_address: str,
) -> None:
    settings = gateway_settings(export_address, api_token=TOKEN, max_body_bytes=64)
    async with served_gateway(settings) as url, client_of(url) as http:
        before = await scrape(http)
        refused = await http.get("/api/jobs")
        assert refused.status_code == 401
        too_large = await http.post(
            "/api/jobs",
            content=b"{" + b" " * 100 + b"}",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        assert too_large.status_code == 413
        after = await scrape(http)
    assert moved(before, after, requests_key("GET", "/api/jobs", 401)) == 1
    assert moved(before, after, requests_key("POST", "/api/jobs", 413)) == 1
