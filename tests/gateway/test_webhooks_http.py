"""Webhooks over HTTP: ``notify: {url, events}`` beside ``source`` and ``output`` in POST
/api/jobs, the secret in that answer alone, the job's deliveries at /api/jobs/{id}/deliveries,
and the operator's endpoint given by flag. Real processes (videojob_launcher); receivers on
127.0.0.1 verify every delivery with ``standardwebhooks`` and ``cloudevents``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from export_service.webhooks.signing import new_secret
from tests.gateway.conftest import GATEWAY_TEST_ARGS, Stack, tiny_spec
from tests.support.polling import wait_until
from tests.support.webhook_receiver import WebhookReceiver
from videojob_launcher import Role, StackConfig


@pytest.mark.parametrize(
    ("notify", "field", "says"),
    [
        ({"url": "http://127.0.0.1:9/hook"}, "notify.url", "a loopback address"),
        ({"url": "http://169.254.169.254/"}, "notify.url", "a link-local address"),
        ({"url": "http://10.0.0.8/"}, "notify.url", "a private address"),
        ({"url": "http://x/" + "a" * 2050}, "notify.url", "at most 2048 characters"),
        ({"events": "all"}, "notify.url", "is required"),
        ({"url": "https://hooks.example/", "events": "most"}, "notify.events", "one of"),
        ({"url": "https://hooks.example/", "secret": "mine"}, "notify.secret", "not a field"),
        ("https://hooks.example/", "notify", "must be an object"),
    ],
)
def test_a_notify_that_cannot_be_used_is_refused_naming_its_field(
    client: httpx.Client, notify: Any, field: str, says: str
) -> None:
    response = client.post("/api/jobs", json={**tiny_spec(), "notify": notify})
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["field"] == field and says in error["message"]


OPERATOR_SECRET = new_secret()


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[WebhookReceiver, WebhookReceiver]]:
    caller, operator = await WebhookReceiver().start(), await WebhookReceiver().start()
    yield caller, operator
    await caller.stop()
    await operator.stop()


@pytest.fixture
async def webhook_stack(
    tmp_path: Path, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> AsyncIterator[Stack]:
    """A stack whose export service allows loopback destinations (every packet stays on this
    host) and tells the operator's receiver of every job's end."""
    export_args = (
        "--webhook-allow-private",
        "--webhook-url",
        receivers[1].url,
        "--webhook-secret",
        OPERATOR_SECRET,
    )
    config = StackConfig(
        tmp_path / "stack", export=Role(args=export_args), gateway=Role(args=GATEWAY_TEST_ARGS)
    )
    stack = Stack(config)
    await stack.astart()
    yield stack
    await stack.astop()


async def test_a_job_created_over_http_notifies_its_endpoint_and_the_operators(
    webhook_stack: Stack, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    caller, operator = receivers
    async with httpx.AsyncClient(base_url=webhook_stack.url, timeout=30) as http:
        body = {**tiny_spec(), "notify": {"url": caller.url, "events": "all"}}
        created = await http.post("/api/jobs", json=body)
        assert created.status_code == 201, created.text
        job = created.json()
        secret = job["notifySecret"]
        assert secret.startswith("whsec_") and secret != OPERATOR_SECRET

        await wait_until(lambda: _ended(http, job["id"]), "the job to end", 60)
        history = await http.get(f"/api/jobs/{job['id']}/history")
        assert history.json()["nextAfterVersion"] is None  # one page: every version
        statuses = {entry["status"] for entry in history.json()["entries"]}
        assert {"queued", "completed"} <= statuses

        async def all_delivered() -> bool:
            shown = (await http.get(f"/api/jobs/{job['id']}/deliveries")).json()["deliveries"]
            wanted = len(statuses) + 1  # and the operator's
            return len(shown) == wanted and all(d["state"] == "delivered" for d in shown)

        await wait_until(all_delivered, "every delivery", 60)
        events = [received.verified(secret) for received in caller.received]
        assert sorted(e.get_type() for e in events) == sorted(
            f"dev.videojob.export.{status}" for status in statuses
        )
        (ended,) = operator.received  # the operator asked for the terminal state only
        assert ended.verified(OPERATOR_SECRET).get_type() == "dev.videojob.export.completed"
        read = (await http.get(f"/api/jobs/{job['id']}")).json()
        assert read["status"] == "completed" and "notifySecret" not in read
        data = ended.event_data()
        shared = ("id", "status", "progress", "version", "outputPath", "finishedAt", "spec")
        assert {key: data[key] for key in shared} == {key: read[key] for key in shared}
        deliveries = (await http.get(f"/api/jobs/{job['id']}/deliveries")).json()["deliveries"]
        assert {d["url"] for d in deliveries} == {caller.url, operator.url}
        assert {d["id"] for d in deliveries} == {
            r.webhook_id for r in (*caller.received, *operator.received)
        }
        assert all(d["lastStatusCode"] == 200 and d["nextAttemptAt"] is None for d in deliveries)
        assert secret not in history.text and secret not in str(deliveries)
        assert (await http.get("/api/jobs/nope/deliveries")).status_code == 404


async def _ended(http: httpx.AsyncClient, job_id: str) -> bool:
    status: str = (await http.get(f"/api/jobs/{job_id}")).json()["status"]
    return status == "completed"
