"""``output.split.parts`` over HTTP: POST /api/jobs takes it, the job's spec shows it back, and
what can't be asked is a 422 naming the field, whether the gateway's schema or the export
service behind it (in-process, at most 4 parts a job, no render service) refuses it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from export_service.split_plan import SplitPolicy
from tests.gateway.inprocess import app_client, gateway_settings, inprocess_export
from videojob.limits import MAX_SPLIT_PARTS


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        inprocess_export(tmp_path, split=SplitPolicy(max_parts=4)) as address,
        app_client(gateway_settings(address)) as client,
    ):
        yield client


def pattern(split: Any = None, **output: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": {"testPattern": {"durationSeconds": 2, "width": 160, "height": 120}},
        "output": {"preset": "ultrafast", **output},
    }
    if split is not None:
        body["output"]["split"] = split
    return body


def assert_refused(response: httpx.Response, field: str) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["code"], body.get("field")) == ("invalid_argument", field), body
    message: str = body["message"]
    return message


@pytest.mark.parametrize("parts", [0, 1, 2, 4])
async def test_the_parts_asked_for_round_trip_through_the_jobs_spec(
    http: httpx.AsyncClient, parts: int
) -> None:
    created = await http.post("/api/jobs", json=pattern({"parts": parts}))
    assert created.status_code == 201, created.text
    job = created.json()
    read = (await http.get(f"/api/jobs/{job['id']}")).json()
    for shown in (job, read):
        # The proto's JSON leaves a 0 out, as every default.
        assert shown["spec"]["output"]["split"] == ({"parts": parts} if parts else {})


async def test_without_split_the_spec_has_none(http: httpx.AsyncClient) -> None:
    created = await http.post("/api/jobs", json=pattern())
    assert created.status_code == 201, created.text
    assert "split" not in created.json()["spec"]["output"]


async def test_more_parts_than_the_operator_allows_is_422(http: httpx.AsyncClient) -> None:
    message = assert_refused(
        await http.post("/api/jobs", json=pattern({"parts": 5})), "output.split.parts"
    )
    assert "at most 4" in message


@pytest.mark.parametrize(
    "body",
    [
        pattern({"parts": 2}, videoCodec="hevc"),
        pattern({"parts": 3}, container="webm", videoCodec="av1"),
        {
            "source": {"slideshow": {"slides": [{"imagePath": "a.png", "durationSeconds": 90}]}},
            "output": {"split": {"parts": 2}},
        },
    ],
    ids=["hevc", "av1", "slideshow"],
)
async def test_parts_of_what_cant_be_split_safely_are_422(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    message = assert_refused(await http.post("/api/jobs", json=body), "output.split.parts")
    assert message.startswith("output.split.parts: this job can't be split safely"), message


@pytest.mark.parametrize(
    ("split", "field"),
    [
        ({"parts": -1}, "output.split.parts"),
        ({"parts": MAX_SPLIT_PARTS + 1}, "output.split.parts"),
        # Past what the proto's field holds: the schema's bound, not an unreadable body.
        ({"parts": 2**32}, "output.split.parts"),
        ({"parts": 1.5}, "output.split.parts"),
        ({"count": 2}, "output.split.count"),
        (3, "output.split"),
    ],
)
async def test_a_split_the_schema_refuses_is_422_naming_it(
    http: httpx.AsyncClient, split: Any, field: str
) -> None:
    assert_refused(await http.post("/api/jobs", json=pattern(split)), field)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("part", {"index": 0, "count": 2, "firstFrame": 0, "frameCount": 10}),
        ("join", {"partPaths": ["renders/a.mp4"]}),
        ("audio", {"totalFrames": 60, "fps": 30}),
    ],
)
async def test_a_client_cant_submit_a_part_an_audio_or_a_join(
    http: httpx.AsyncClient, kind: str, value: dict[str, Any]
) -> None:
    assert_refused(await http.post("/api/jobs", json={**pattern(), kind: value}), kind)
