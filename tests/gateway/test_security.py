"""The optional API token, CORS, the body limit, and the error mapping of the gateway: the app
in-process (tests.gateway.inprocess), over an in-process export service where a call must be
answered and over the real stack where a rendered job is needed; the access log is the gateway
process's own."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_status import rpc_status

from gateway.errors import grpc_error_response
from tests.gateway.conftest import Stack, start_gateway, stop, tiny_spec
from tests.gateway.inprocess import app_client, gateway_settings
from videojob.errors import InvalidArgument
from videojob.grpc_errors import rich_status

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
async def token_gateway(export_address: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(gateway_settings(export_address, api_token=TOKEN)) as http:
        yield http


@pytest.fixture
async def token_gateway_over_stack(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """With the real stack's export service behind it: its jobs are rendered."""
    async with app_client(gateway_settings(stack.export.address, api_token=TOKEN)) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthenticated"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_token_missing_or_wrong_is_401_on_every_api_route(
    token_gateway: httpx.AsyncClient,
) -> None:
    some_id = str(uuid.uuid4())
    for headers in ({}, bearer("wrong"), bearer(TOKEN + "x"), {"Authorization": TOKEN}):
        assert_401(await token_gateway.get("/api/jobs", headers=headers))
        assert_401(await token_gateway.post("/api/jobs", json=tiny_spec(), headers=headers))
        assert_401(await token_gateway.get(f"/api/jobs/{some_id}", headers=headers))
        assert_401(await token_gateway.post(f"/api/jobs/{some_id}/cancel", headers=headers))
        assert_401(await token_gateway.get(f"/api/jobs/{some_id}/events", headers=headers))
        assert_401(await token_gateway.get(f"/api/jobs/{some_id}/download", headers=headers))


async def test_right_token_is_served(token_gateway: httpx.AsyncClient) -> None:
    listed = await token_gateway.get("/api/jobs", headers=bearer(TOKEN))
    assert listed.status_code == 200, listed.text
    created = await token_gateway.post("/api/jobs", json=tiny_spec(), headers=bearer(TOKEN))
    assert created.status_code == 201, created.text
    missing = await token_gateway.get(f"/api/jobs/{uuid.uuid4()}", headers=bearer(TOKEN))
    assert missing.status_code == 404


async def test_token_as_query_parameter_only_on_events_and_download(
    token_gateway_over_stack: httpx.AsyncClient, completed_job: dict[str, Any]
) -> None:
    token_gateway = token_gateway_over_stack
    job_id = completed_job["id"]
    query = {"access_token": TOKEN}
    events = await token_gateway.get(f"/api/jobs/{job_id}/events", params=query)
    assert events.status_code == 200
    assert "event: completed" in events.text
    download = await token_gateway.get(f"/api/jobs/{job_id}/download", params=query)
    assert download.status_code == 200
    assert download.content[4:8] == b"ftyp"
    wrong = await token_gateway.get(f"/api/jobs/{job_id}/download", params={"access_token": "nope"})
    assert_401(wrong)
    assert_401(await token_gateway.get("/api/jobs", params=query))
    assert_401(await token_gateway.get(f"/api/jobs/{job_id}", params=query))


async def test_page_health_and_openapi_need_no_token(token_gateway: httpx.AsyncClient) -> None:
    assert (await token_gateway.get("/")).status_code == 200
    assert (await token_gateway.get("/healthz")).status_code == 200
    assert (await token_gateway.get("/openapi.json")).status_code == 200


async def test_cors_is_off_by_default(gateway_over_export: httpx.AsyncClient) -> None:
    client = gateway_over_export
    response = await client.get("/api/jobs", headers={"Origin": "http://elsewhere.test"})
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        "/api/jobs",
        headers={"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_allows_only_the_configured_origin(export_address: str) -> None:
    origin = "http://app.example.test"
    async with app_client(gateway_settings(export_address, cors_origins=(origin,))) as http:
        preflight = await http.options(
            "/api/jobs",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        simple = await http.get("/api/jobs", headers={"Origin": origin})
        assert simple.headers["access-control-allow-origin"] == origin
        foreign = await http.get("/api/jobs", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in foreign.headers


async def test_oversized_body_is_413_json(gateway_alone: httpx.AsyncClient) -> None:
    client = gateway_alone
    big = {"source": {"testPattern": {"durationSeconds": 1}}, "padding": "x" * 70_000}
    declared = await client.post("/api/jobs", json=big)
    assert declared.status_code == 413
    assert declared.json()["code"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(70):
            yield b" " * 1024

    streamed = await client.post(
        "/api/jobs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["message"]


def test_grpc_status_codes_map_to_http_in_one_place() -> None:
    def answer(
        code: grpc.StatusCode, details: str, trailing: grpc.aio.Metadata | None = None
    ) -> tuple[int, bytes]:
        metadata = grpc.aio.Metadata()
        error = grpc.aio.AioRpcError(
            code, metadata, trailing or metadata, details, debug_error_string=None
        )
        response = grpc_error_response(error)
        return response.status_code, bytes(response.body)

    assert answer(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many jobs")[0] == 429
    assert answer(grpc.StatusCode.NOT_FOUND, "no job")[0] == 404
    assert answer(grpc.StatusCode.FAILED_PRECONDITION, "job is completed")[0] == 409
    assert answer(grpc.StatusCode.UNAVAILABLE, "down")[0] == 503
    # The field comes from the status details, never from the message text.
    status, body = answer(grpc.StatusCode.INVALID_ARGUMENT, "spec.output.video_codec: bad")
    assert status == 422
    assert b'"field"' not in body
    rich = rpc_status.to_status(rich_status(InvalidArgument("spec.output.video_codec", "bad")))
    status, body = answer(rich.code, rich.details, grpc.aio.Metadata(*rich.trailing_metadata))
    assert status == 422
    assert b'"output.videoCodec: bad"' in body
    assert b'"field":"output.videoCodec"' in body


def test_access_log_is_off_by_default(stack: Stack, client: httpx.Client) -> None:
    marker = f"/api/jobs/{uuid.uuid4()}"
    assert client.get(marker).status_code == 404
    assert client.get("/livez").status_code == 200
    assert marker not in stack.gateway.log()


def test_access_log_when_on_redacts_the_query_token(
    stack: Stack, completed_job: dict[str, Any]
) -> None:
    gateway = start_gateway(
        stack.export.address, "--api-token", TOKEN, env={"GATEWAY_ACCESS_LOG": "1"}
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", timeout=30) as http:
            path = f"/api/jobs/{completed_job['id']}/download"
            assert http.get(path, params={"access_token": TOKEN}).status_code == 200
            deadline = time.monotonic() + 10
            while path not in gateway.log():
                assert time.monotonic() < deadline, gateway.log()
                time.sleep(0.02)
    finally:
        stop(gateway)
    logged = gateway.log()
    assert f"{path}?access_token=[redacted]" in logged
    assert TOKEN not in logged
