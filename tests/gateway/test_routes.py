"""Every JSON route and its errors: against the real stack on sockets where a job is rendered,
in-process (tests.gateway.inprocess) where the answer needs no render service."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from starlette.routing import Route

from gateway.app import create_app
from gateway.settings import Settings
from tests.gateway.conftest import (
    LONG_SPEC,
    create_job,
    tiny_spec,
    wait_for,
    wait_terminal,
)
from videojob import limits

PINNED_KEYS = {
    "id",
    "status",
    "progress",
    "stage",
    "outputPath",
    "error",
    "attempt",
    "version",
    "createdAt",
    "updatedAt",
    "startedAt",
    "finishedAt",
}


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["message"], body
    return body


def test_create_returns_201_with_the_pinned_job_json(client: httpx.Client) -> None:
    response = client.post("/api/jobs", json=tiny_spec())
    assert response.status_code == 201, response.text
    job = response.json()
    assert job.keys() >= PINNED_KEYS
    assert job["status"] in {"queued", "running", "completed"}
    assert job["createdAt"].endswith("Z")
    assert job["spec"]["source"]["testPattern"]["width"] == 160
    fetched = client.get(f"/api/jobs/{job['id']}").json()
    assert fetched["id"] == job["id"]
    assert fetched["version"] >= job["version"]


def test_completed_job_json(completed_job: dict[str, Any]) -> None:
    assert completed_job["progress"] == 100
    assert completed_job["stage"] == "Complete"
    assert completed_job["outputPath"].endswith(f"{completed_job['id']}.mp4")
    assert completed_job["error"] is None
    assert completed_job["finishedAt"] is not None
    assert completed_job["etaSeconds"] is None


def test_same_idempotency_key_returns_the_same_job(client: httpx.Client) -> None:
    key = f"test-{uuid.uuid4()}"
    first = create_job(client, tiny_spec(), **{"Idempotency-Key": key})
    again = create_job(client, tiny_spec(), **{"Idempotency-Key": key})
    other = create_job(client, tiny_spec(), **{"Idempotency-Key": f"{key}-other"})
    assert again["id"] == first["id"]
    assert other["id"] != first["id"]
    wait_terminal(client, first["id"])
    wait_terminal(client, other["id"])


def test_a_key_reused_for_another_spec_is_409_naming_the_header(client: httpx.Client) -> None:
    key = f"test-{uuid.uuid4()}"
    first = create_job(client, tiny_spec(), **{"Idempotency-Key": key})
    reused = client.post("/api/jobs", json=tiny_spec(2.0), headers={"Idempotency-Key": key})
    error = assert_error(reused, 409)
    assert (error["code"], error["field"]) == ("already_exists", "Idempotency-Key"), error
    assert first["id"] in error["message"], error
    wait_terminal(client, first["id"])


async def test_bad_field_is_422_naming_the_field_in_camel_case(
    gateway_alone: httpx.AsyncClient,
) -> None:
    cases = {
        "source.testPattern.durationSeconds": {"source": {"testPattern": {"durationSeconds": -1}}},
        "source.testPattern.width": {
            "source": {"testPattern": {"durationSeconds": 1, "width": "wide"}}
        },
        "output.bitrate": tiny_spec(bitrate=5),
        "output.container": tiny_spec(container="avi"),
        "source": {"source": {}},
    }
    for field, body in cases.items():
        error = assert_error(await gateway_alone.post("/api/jobs", json=body), 422)
        assert error["field"] == field, error
        assert error["message"].startswith(f"{field}: "), error


async def test_export_service_rejections_are_translated_to_camel_case(
    gateway_over_export: httpx.AsyncClient,
) -> None:
    webm_with_h264 = tiny_spec(container="webm", videoCodec="h264", audioCodec="opus")
    error = assert_error(await gateway_over_export.post("/api/jobs", json=webm_with_h264), 422)
    assert error["message"].startswith("output.videoCodec: "), error
    assert error["field"] == "output.videoCodec", error
    only_width = {"source": {"testPattern": {"durationSeconds": 1, "width": 160}}}
    error = assert_error(await gateway_over_export.post("/api/jobs", json=only_width), 422)
    assert error["message"].startswith("source.testPattern.height: "), error
    assert error["field"] == "source.testPattern.height", error


async def test_malformed_requests_are_400_or_415(gateway_alone: httpx.AsyncClient) -> None:
    not_json = await gateway_alone.post(
        "/api/jobs", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert "JSON" in assert_error(not_json, 400)["message"]
    plain = await gateway_alone.post(
        "/api/jobs", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert_error(plain, 415)
    bad_key = await gateway_alone.post(
        "/api/jobs", json=tiny_spec(), headers={"Idempotency-Key": "a b"}
    )
    assert assert_error(bad_key, 400)["field"] == "Idempotency-Key"
    not_an_object = await gateway_alone.post("/api/jobs", json=[1, 2])
    assert assert_error(not_an_object, 422)["field"] == "body"


async def test_unknown_job_is_404_everywhere(gateway_over_export: httpx.AsyncClient) -> None:
    missing = f"no-such-job-{uuid.uuid4()}"
    assert_error(await gateway_over_export.get(f"/api/jobs/{missing}"), 404)
    assert_error(await gateway_over_export.post(f"/api/jobs/{missing}/cancel"), 404)
    assert_error(await gateway_over_export.get(f"/api/jobs/{missing}/events"), 404)
    assert_error(await gateway_over_export.get(f"/api/jobs/{missing}/download"), 404)


async def test_unknown_route_and_wrong_method_are_json(gateway_alone: httpx.AsyncClient) -> None:
    assert_error(await gateway_alone.get("/api/nothing-here"), 404)
    assert_error(await gateway_alone.delete("/api/jobs"), 405)


def test_list_is_newest_first_with_cursor_pagination(client: httpx.Client) -> None:
    created = [create_job(client)["id"] for _ in range(3)]
    first = client.get("/api/jobs", params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [job["id"] for job in page["jobs"]] == created[::-1][:2]
    assert page["nextCursor"]
    second = client.get("/api/jobs", params={"limit": 2, "cursor": page["nextCursor"]}).json()
    assert second["jobs"][0]["id"] == created[0]
    everything = client.get("/api/jobs", params={"limit": 100}).json()["jobs"]
    stamps = [job["createdAt"] for job in everything]
    assert stamps == sorted(stamps, reverse=True)
    for job_id in created:
        wait_terminal(client, job_id)


def test_list_filters_by_status(client: httpx.Client, completed_job: dict[str, Any]) -> None:
    response = client.get("/api/jobs", params={"status": "completed", "limit": 100})
    jobs = response.json()["jobs"]
    assert completed_job["id"] in {job["id"] for job in jobs}
    assert {job["status"] for job in jobs} == {"completed"}


async def test_list_rejects_bad_parameters(gateway_over_export: httpx.AsyncClient) -> None:
    # Malformed (not a number, not a cursor this service issued) is 400; a value outside the
    # documented ones is 422. Either way the code is invalid_argument and the field is named.
    cases = {
        "status=done": (422, "status"),
        "status=": (422, "status"),
        "limit=0": (422, "limit"),
        "limit=1000": (422, "limit"),
        "limit=abc": (400, "limit"),
        "cursor=%25%25": (400, "cursor"),
        "cursor=bm9wZQ": (400, "cursor"),
    }
    for query, (status, field) in cases.items():
        error = assert_error(await gateway_over_export.get(f"/api/jobs?{query}"), status)
        assert (error["code"], error["field"]) == ("invalid_argument", field), (query, error)


def test_cancel_a_running_job_then_again(client: httpx.Client) -> None:
    job = create_job(client, LONG_SPEC)
    wait_for(client, job["id"], {"running"})
    response = client.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == job["id"]
    finished = wait_terminal(client, job["id"])
    assert finished["status"] == "cancelled"
    assert finished["progress"] < 100
    again = client.post(f"/api/jobs/{job['id']}/cancel")  # idempotent: the same answer
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "cancelled"


def test_cancel_completed_job_is_409(client: httpx.Client, completed_job: dict[str, Any]) -> None:
    error = assert_error(client.post(f"/api/jobs/{completed_job['id']}/cancel"), 409)
    assert error["code"] == "failed_precondition", error
    assert error["message"].startswith("the job is completed; "), error
    after = client.get(f"/api/jobs/{completed_job['id']}").json()
    assert after["status"] == "completed"


def test_healthz_reports_the_export_service(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "export": "SERVING", "renders": "SERVING"}


async def test_livez_answers_without_the_export_service(
    gateway_alone: httpx.AsyncClient,
) -> None:
    response = await gateway_alone.get("/livez")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


async def test_healthz_is_503_json_when_export_is_unreachable(
    gateway_alone: httpx.AsyncClient,
) -> None:
    assert (await gateway_alone.get("/livez")).json() == {"status": "ok"}
    assert_error(await gateway_alone.get("/healthz"), 503)
    error = assert_error(await gateway_alone.get("/api/jobs"), 503)
    assert error["code"] == "unavailable"


async def test_page_and_its_assets_are_served(gateway_alone: httpx.AsyncClient) -> None:
    page = await gateway_alone.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    for asset, kind in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
        response = await gateway_alone.get(asset)
        assert response.status_code == 200
        assert kind in response.headers["content-type"]


async def test_openapi_document_lists_every_route(gateway_alone: httpx.AsyncClient) -> None:
    document = (await gateway_alone.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    # Every route the app serves is documented with its methods, except the page, its assets
    # and the documents themselves.
    undocumented = {"/", "/docs", "/favicon.svg", "/favicon.ico", "/metrics", "/openapi.json"}
    app = create_app(Settings())
    served = {
        route.path: {method.lower() for method in route.methods or ()} - {"head"}
        for route in app.routes
        if isinstance(route, Route) and route.path not in undocumented
    }
    documented = {path: set(operations) - {"parameters"} for path, operations in paths.items()}
    assert documented == served
    assert {
        "/api/events",
        "/api/jobs",
        "/api/jobs/{id}",
        "/api/jobs/{id}/cancel",
        "/api/jobs/{id}/events",
        "/api/jobs/{id}/history",
        "/api/jobs/{id}/download",
        "/api/media",
        "/healthz",
        "/livez",
        "/readyz",
    } <= set(paths)
    assert set(paths["/api/jobs/{id}"]) >= {"get", "delete"}
    # The page reads the output choices from this one place.
    assert document["components"]["schemas"]["OutputSpec"]["x-codecs-by-container"] == {
        container: {
            "videoCodecs": list(limits.VIDEO_CODECS_BY_CONTAINER[container]),
            "audioCodecs": list(limits.AUDIO_CODECS_BY_CONTAINER[container]),
            "crf": {
                codec: list(limits.CRF_RANGE_BY_CODEC[codec])
                for codec in limits.VIDEO_CODECS_BY_CONTAINER[container]
            },
        }
        for container in limits.CONTAINERS
    }
    assert set(paths["/api/jobs"]) == {"get", "post"}
    schemas = document["components"]["schemas"]
    assert {"RenderSpec", "Job", "Error"} <= schemas.keys()
    assert set(schemas["Job"]["required"]) == PINNED_KEYS
