"""Schemathesis against the real gateway's /openapi.json: generated requests (valid and invalid)
for every operation, answered without a 5xx, within a timeout, as the document says, and every
error as a JSON body with a message.

The export service behind it points at a render address where nothing listens, so accepted
jobs (up to 4 h of 8K video are valid) stay queued instead of rendering.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.openapi import OPENAPI_DOCUMENT
from tests.gateway.conftest import start_gateway, stop_all
from tests.security.conftest import export_args, unused_address
from tests.support.processes import start_service

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiCase

REQUEST_TIMEOUT_SECONDS = 15


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    export = start_service(
        "export_service",
        export_args(unused_address(), root / "export.db", "--max-attempts", "1000"),
    )
    gateway = start_gateway(export.address)
    yield f"http://127.0.0.1:{gateway.port}"
    stop_all([gateway, export])


# The document the gateway serves (checked below), loaded at import so that pytest can
# parametrize by operation before the stack runs. The page's event stream is left out: an
# accepted request never ends and, with no job to report, stays silent between heartbeats,
# which schemathesis's stream reader cannot tell from a hung server. Its parameters' limits
# are walked by tests/contracts/test_openapi_limits.py and its refusals and stream by
# tests/gateway/test_page_events.py.
#
# A create's webhook endpoint (``notify``) is left out too: a URL the schema admits is resolved
# by the export service with this machine's resolver, and a public one would be sent to. Its
# refusals are tested by tests/gateway/test_webhooks_http.py, its deliveries on loopback.
FUZZED_DOCUMENT = copy.deepcopy(OPENAPI_DOCUMENT)
FUZZED_DOCUMENT["components"]["schemas"]["CreateJob"]["properties"].pop("notify")
schema = schemathesis.openapi.from_dict(FUZZED_DOCUMENT).exclude(path="/api/events")
# An upload's body is the file's bytes whatever its media type (schemathesis knows no
# serializer for the wildcard ones).
for media_type in ("video/*", "audio/*"):
    schemathesis.serializer.alias(media_type, "application/octet-stream")


def test_the_fuzzed_document_is_the_served_one(gateway_url: str) -> None:
    served = httpx.get(f"{gateway_url}/openapi.json", timeout=REQUEST_TIMEOUT_SECONDS)
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(OPENAPI_DOCUMENT))


def error_is_json_with_a_message(ctx: CheckContext, response: Response, case: OpenApiCase) -> bool:
    """Every 4xx/5xx the gateway answers is ``{"code", "message"}`` JSON (a refused Range
    included)."""
    if response.status_code < 400:
        return True
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (response.status_code, content_type)
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert isinstance(body.get("code"), str) and body["code"], body
    return True


def positive_data_accepted(ctx: CheckContext, response: Response, case: OpenApiCase) -> bool | None:
    """Schemathesis's positive_data_acceptance, minus two false alarms:

    - its coverage phase sends cases labelled positive whose *body* component it generated
      negative (body ``0`` while varying the Idempotency-Key header); ``0`` is not a RenderSpec
      and 422 is the right answer;
    - ``cursor`` is an opaque token: the pattern bounds its syntax, but only a cursor this
      service issued is valid, and the document declares 400 for any other one;
    - a RenderSpec has rules JSON Schema cannot state (codec/container pairs, width and height
      together, the slides' total duration, paths that are relative, without ``..`` or control
      characters): the document declares 422 naming the field for them, and that is checked;
    - an upload's body is any bytes to JSON Schema, but only a file ffmpeg can read as video,
      audio or an image is kept: the document declares 422 with ``field`` ``body`` for any
      other, and that is checked.
    """
    meta = case.meta
    if meta is not None:
        body = meta.components.get(ParameterLocation.BODY)
        if body is not None and body.mode == GenerationMode.NEGATIVE:
            return None
    if (
        case.operation.path == "/api/jobs"
        and case.method == "GET"
        and "cursor" in (case.query or {})
    ):
        return None
    if case.operation.path == "/api/jobs" and case.method == "POST" and response.status_code == 422:
        field = response.json().get("field", "")
        assert field.startswith(("source", "output")), response.text
        return None
    if (
        case.operation.path == "/api/media"
        and case.method == "POST"
        and response.status_code == 422
    ):
        assert response.json().get("field") == "body", response.text
        return None
    return positive_data_acceptance(ctx, response, case)


def negative_data_refused(ctx: CheckContext, response: Response, case: OpenApiCase) -> bool | None:
    """Schemathesis's negative_data_rejection, which does not count 413 as a refusal: a body
    made invalid by adding items until it is over the gateway's body limit is refused for its
    size before it is read, as the document declares (413 with a JSON error, checked by the
    other checks)."""
    if response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_refused,
    positive_data_accepted,
    error_is_json_with_a_message,
]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_as_documented(case: OpenApiCase, gateway_url: str) -> None:
    case.call_and_validate(base_url=gateway_url, checks=CHECKS, timeout=REQUEST_TIMEOUT_SECONDS)
