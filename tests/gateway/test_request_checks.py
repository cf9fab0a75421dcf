"""The gateway's own checks of a request, made before it calls the export service: the app runs
in-process (httpx's ASGI transport, no export service behind it), so each answer here is the
gateway's alone. 400 when a value cannot be read as what it should be, 422 when it can but is
outside what the API documents (docs/api.md, "Errors"); the field is named either way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings

# Nothing listens there: a request that got past the gateway's checks would fail upstream
# (503), never with the answers expected here.
SETTINGS = Settings(export_addr="127.0.0.1:1")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(SETTINGS))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def assert_refused(response: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert (body["code"], body.get("field")) == ("invalid_argument", field), body
    assert body["message"], body
    return body


@pytest.mark.parametrize("path", ["/api/jobs", "/api/events", "/api/jobs/some-id/history"])
@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("-1", 422),
        ("0", 422),
        ("-0", 422),
        ("-99999999999999999999", 422),
        ("99999999999999999999", 422),
        ("abc", 400),
        ("", 400),
        ("-", 400),
        ("1e3", 400),
    ],
)
async def test_limit_outside_its_range_is_422_and_not_a_number_400(
    http: httpx.AsyncClient, path: str, value: str, status: int
) -> None:
    assert_refused(await http.get(path, params={"limit": value}), status, "limit")


@pytest.mark.parametrize(("value", "status"), [("-1", 422), ("abc", 400), ("1.5", 400)])
async def test_after_version_is_checked_like_limit(
    http: httpx.AsyncClient, value: str, status: int
) -> None:
    response = await http.get("/api/jobs/some-id/history", params={"afterVersion": value})
    assert_refused(response, status, "afterVersion")


def transcode(input_path: str) -> str:
    """A RenderSpec as JSON text, the input path written with JSON's escapes as given."""
    return '{"source": {"transcode": {"inputPath": "' + input_path + '"}}}'


@pytest.mark.parametrize("escaped", ["\\ud800", "a\\udfffb.mp4", "clips/\\udc80.mp4"])
async def test_a_lone_surrogate_in_a_string_is_422_naming_the_field(
    http: httpx.AsyncClient, escaped: str
) -> None:
    response = await http.post(
        "/api/jobs",
        content=transcode(escaped).encode(),
        headers={"Content-Type": "application/json"},
    )
    body = assert_refused(response, 422, "source.transcode.inputPath")
    assert "proto" not in body["message"].lower() and "videojob." not in body["message"], body
    assert "Unicode" in body["message"], body


async def test_a_lone_surrogate_in_a_field_name_is_422_too(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/api/jobs",
        content=b'{"source": {"transcode": {"inputPath": "a.mp4"}}, "\\ud800": 1}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_argument" and body["message"], body
