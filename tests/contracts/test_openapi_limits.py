"""Every limit the gateway's OpenAPI document states is the limit the running services enforce.

The document is walked (request bodies, query and header parameters, path parameters) for
every ``maxLength``, ``maximum``, ``minimum``, ``exclusiveMinimum``, ``enum``, ``maxItems`` and
``minItems``. For each one, against a real stack (gateway, export service, render service):

- the value at the limit is accepted (201 for a body or header, then the job is cancelled at
  once, so no long render runs; 200 for a listing; for a job id, the export service is asked and
  answers 404 rather than refusing the id);
- the value just past it is refused with the status the document declares for it
  (``x-refused-with`` on the parameter or request body: 422, 400, or 404 for a job id) and
  ``field`` naming it as the HTTP API spells it (``source.testPattern.width``,
  ``Idempotency-Key``, ``limit``);
- the same value sent straight to the export service over gRPC (and, for a spec, to the render
  service) is INVALID_ARGUMENT with a google.rpc.BadRequest field violation naming its proto
  path, so neither service is more lenient than the document.
"""

from __future__ import annotations

import math
import re
import secrets
import string
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.openapi import OPENAPI_DOCUMENT, REFUSED_WITH
from tests.gateway.conftest import Stack
from tests.gateway.conftest import stack as stack
from videojob import limits
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2
from videojob.spec_schema import BOUND_DEPENDS_ON, BOUND_SET_BY_FLAG

Schema = dict[str, Any]
JsonPath = tuple[str | int, ...]

LIMIT_KEYWORDS = (
    "maxLength",
    "maximum",
    "minimum",
    "exclusiveMinimum",
    "enum",
    "maxItems",
    "minItems",
)
# Where a request parameter goes when the gateway calls the export service.
GRPC_FIELD_OF_PARAMETER = {("header", "Idempotency-Key"): "request_id", ("path", "id"): "id"}
# A create's webhook endpoint is no part of the RenderSpec, and a URL the stack accepts needs a
# destination it may reach: its limits are probed by tests/export/test_webhooks.py (gRPC) and
# tests/gateway/test_webhooks_http.py (HTTP).
WEBHOOK_ENDPOINT = ("notify",)
PATH_COMPONENT_CHARACTERS = 199  # inside limits.MAX_PATH_COMPONENT_BYTES
CALL_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Limit:
    """One bound the document states."""

    operation: str
    method: str
    path: str
    location: str  # body, query, header or path
    name: str  # the parameter's name, or the body field's JSON path
    json_path: JsonPath  # within the body; () for a parameter
    keyword: str
    bound: Any
    schema: Schema
    refused_with: int  # the status the document declares for a value past the bound
    # Values the document requires alongside (the ``if`` of an ``allOf`` rule): path → value.
    context: tuple[tuple[JsonPath, Any], ...] = ()


@dataclass(frozen=True)
class Probe:
    limit: Limit
    value: Any
    accepted: bool
    label: str = field(compare=False)


# --- Walking the document ----------------------------------------------------------------------


def _resolve(schema: Schema) -> Schema:
    while "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        schema = OPENAPI_DOCUMENT["components"]["schemas"][name]
    return schema


def field_name(json_path: JsonPath) -> str:
    """``("source", "slides", 0, "imagePath")`` → ``source.slides[0].imagePath``."""
    text = ""
    for part in json_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _walk_schema(
    schema: Schema, json_path: JsonPath, context: tuple[tuple[JsonPath, Any], ...]
) -> Iterator[tuple[JsonPath, str, Any, Schema, tuple[tuple[JsonPath, Any], ...]]]:
    schema = _resolve(schema)
    for keyword in LIMIT_KEYWORDS:
        # A maximum that depends on another field (crf on the codec) is probed by the rules
        # that state it per value of that field.
        if keyword == "maximum" and BOUND_DEPENDS_ON in schema and not context:
            continue
        # A maximum an operator's flag may lower (output.split.parts: --split-max-parts) is
        # the flag's, probed where the flag is set (tests/export/test_split_create.py,
        # tests/gateway/test_split_http.py).
        if keyword == "maximum" and BOUND_SET_BY_FLAG in schema:
            continue
        if keyword in schema:
            yield json_path, keyword, schema[keyword], schema, context
    for name, child in schema.get("properties", {}).items():
        yield from _walk_schema(child, (*json_path, name), context)
    if "items" in schema:
        yield from _walk_schema(schema["items"], (*json_path, 0), context)
    for part in schema.get("allOf", ()):
        yield from _walk_schema(part, json_path, context)
    if "then" in schema:
        required = tuple(
            ((*json_path, name), condition["const"])
            for name, condition in schema["if"].get("properties", {}).items()
            if "const" in condition
        )
        yield from _walk_schema(schema["then"], json_path, context + required)


def document_limits() -> Iterator[Limit]:
    for path, operations in OPENAPI_DOCUMENT["paths"].items():
        for method, operation in operations.items():
            common = {"operation": operation["operationId"], "method": method, "path": path}
            for parameter in operation.get("parameters", ()):
                for _, keyword, bound, schema, _ in _walk_schema(parameter["schema"], (), ()):
                    yield Limit(
                        **common,
                        location=parameter["in"],
                        name=parameter["name"],
                        json_path=(),
                        keyword=keyword,
                        bound=bound,
                        schema=schema,
                        refused_with=parameter[REFUSED_WITH],
                    )
            request_body = operation.get("requestBody", {})
            body = request_body.get("content", {}).get("application/json")
            if body is None:
                continue
            for json_path, keyword, bound, schema, context in _walk_schema(body["schema"], (), ()):
                if json_path[:1] == WEBHOOK_ENDPOINT:
                    continue
                yield Limit(
                    **common,
                    location="body",
                    name=field_name(json_path),
                    json_path=json_path,
                    keyword=keyword,
                    bound=bound,
                    schema=schema,
                    refused_with=request_body[REFUSED_WITH],
                    context=context,
                )


# --- Values at and past each limit -------------------------------------------------------------


def _text(length: int, location: str) -> str:
    """``length`` visible characters, random (Idempotency-Keys must not repeat). Outside a URL
    path a '/' is put between components, so a media path of any length stays a valid one."""
    characters = [secrets.choice(string.ascii_letters) for _ in range(length)]
    if location != "path":
        for index in range(PATH_COMPONENT_CHARACTERS, length - 1, PATH_COMPONENT_CHARACTERS + 1):
            characters[index] = "/"
    return "".join(characters)


def _integer(schema: Schema) -> bool:
    kind = schema.get("type")
    return kind == "integer" or (isinstance(kind, list) and "integer" in kind)


def _step(schema: Schema) -> int:
    return int(schema.get("multipleOf", 1))


def _above(value: float, schema: Schema) -> float:
    return value + _step(schema) if _integer(schema) else math.nextafter(value, math.inf)


def _below(value: float, schema: Schema) -> float:
    return value - _step(schema) if _integer(schema) else math.nextafter(value, -math.inf)


def _outside(members: list[Any]) -> Any:
    if all(isinstance(member, bool) for member in members):
        return not members[0] if len(members) == 1 else "maybe"
    return f"{members[0]}-not-listed"


def probes(limit: Limit) -> Iterator[Probe]:
    bound, schema, keyword = limit.bound, limit.schema, limit.keyword
    if keyword == "maxLength":
        yield Probe(limit, _text(bound, limit.location), True, f"{bound} characters")
        yield Probe(limit, _text(bound + 1, limit.location), False, f"{bound + 1} characters")
    elif keyword == "maximum":
        yield Probe(limit, bound, True, f"{bound}")
        yield Probe(limit, _above(bound, schema), False, f"{_above(bound, schema)!r}")
    elif keyword == "minimum":
        yield Probe(limit, bound, True, f"{bound}")
        yield Probe(limit, _below(bound, schema), False, f"{_below(bound, schema)!r}")
    elif keyword == "exclusiveMinimum":
        yield Probe(limit, _above(bound, schema), True, f"{_above(bound, schema)!r}")
        yield Probe(limit, bound, False, f"{bound}")
    elif keyword == "enum":
        for member in bound:
            yield Probe(limit, member, True, f"{member!r}")
        yield Probe(limit, _outside(bound), False, f"{_outside(bound)!r}")
    elif keyword == "maxItems":
        yield Probe(limit, bound, True, f"{bound} items")
        yield Probe(limit, bound + 1, False, f"{bound + 1} items")
    elif keyword == "minItems" and bound > 0:
        yield Probe(limit, bound, True, f"{bound} items")
        yield Probe(limit, bound - 1, False, f"{bound - 1} items")


def minimal(schema: Schema) -> Any:
    """The smallest valid instance the document allows for ``schema``."""
    schema = _resolve(schema)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = list(schema.get("required", ()))
        if not required and schema.get("minProperties", 0) > 0:
            required = list(properties)[: schema["minProperties"]]
        return {name: minimal(properties[name]) for name in required}
    if kind == "array":
        return [minimal(schema["items"]) for _ in range(schema.get("minItems", 0))]
    if kind == "string":
        return "a" * max(schema.get("minLength", 1), 1)
    if kind in ("integer", "number"):
        if "minimum" in schema:
            return schema["minimum"]
        if "exclusiveMinimum" in schema:
            return _above(schema["exclusiveMinimum"], schema)
        return 1
    if kind == "boolean":
        return False
    raise AssertionError(f"no minimal value for {schema}")


def _companion(value: Any, schema: Schema, *, accepted: bool) -> Any:
    """A value for a field the document requires together with one set to ``value``. Beside a
    value at a bound: the same, brought within the companion's own bounds (width 0 goes with
    height 0). Beside a value past a bound: the companion's largest, which no partner within
    bounds makes invalid, so that only the value past its bound is wrong."""
    schema = _resolve(schema)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return minimal(schema)
    if not accepted:
        return schema.get("maximum", minimal(schema))
    return min(max(value, schema.get("minimum", value)), schema.get("maximum", value))


def _with_value(schema: Schema, json_path: JsonPath, value: Any, *, accepted: bool) -> Any:
    """A minimal valid instance of ``schema`` with ``value`` at ``json_path``."""
    schema = _resolve(schema)
    if not json_path:
        return value
    head, rest = json_path[0], json_path[1:]
    if isinstance(head, int):
        items = minimal(schema) or [minimal(schema["items"])]
        items[head] = _with_value(schema["items"], rest, value, accepted=accepted)
        return items
    properties = schema["properties"]
    # An object holding exactly one of its properties (a oneof) holds only the one on the path.
    instance = {} if schema.get("maxProperties") == 1 else minimal(schema)
    instance[head] = _with_value(properties[head], rest, value, accepted=accepted)
    if not rest:
        for companion in schema.get("dependentRequired", {}).get(head, ()):
            instance.setdefault(
                companion, _companion(value, properties[companion], accepted=accepted)
            )
    return instance


def _set(instance: dict[str, Any], json_path: JsonPath, value: Any) -> None:
    for part in json_path[:-1]:
        instance = instance.setdefault(str(part), {})
    instance[str(json_path[-1])] = value


def request_body(probe: Probe, root: Schema) -> Any:
    limit = probe.limit
    if limit.location != "body":
        return minimal(root)
    value = probe.value
    if limit.keyword in ("maxItems", "minItems"):
        value = [minimal(limit.schema["items"]) for _ in range(probe.value)]
    body = _with_value(root, limit.json_path, value, accepted=probe.accepted)
    for json_path, required in limit.context:
        _set(body, json_path, required)
    return body


ALL_PROBES = [probe for limit in document_limits() for probe in probes(limit)]


def _probe_id(probe: Probe) -> str:
    verdict = "accepted" if probe.accepted else "refused"
    where = probe.limit.name + "".join(f"[{field_name(p)}={v}]" for p, v in probe.limit.context)
    return f"{probe.limit.operation}-{where}-{probe.limit.keyword}-{probe.label}-{verdict}"


# --- The stack ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=CALL_TIMEOUT_SECONDS) as client:
        yield client


@pytest.fixture(scope="module")
def export_stub(stack: Stack) -> Iterator[export_pb2_grpc.ExportServiceStub]:
    with grpc.insecure_channel(stack.export.address) as channel:
        yield export_pb2_grpc.ExportServiceStub(channel)


@pytest.fixture(scope="module")
def render_stub(stack: Stack) -> Iterator[render_pb2_grpc.RenderServiceStub]:
    with grpc.insecure_channel(stack.render.address) as channel:
        yield render_pb2_grpc.RenderServiceStub(channel)


@pytest.fixture(scope="module")
def job_id(http: httpx.Client) -> str:
    """A job that exists (cancelled at once): the parameters of a route about one job are
    probed on it, so that a value within its limit gets that route's 200."""
    response = http.post("/api/jobs", json=minimal_spec())
    assert response.status_code == 201, response.text
    job = response.json()
    cancel(http, job)
    return str(job["id"])


def send(http: httpx.Client, probe: Probe, job_id: str) -> httpx.Response:
    limit = probe.limit
    operation = OPENAPI_DOCUMENT["paths"][limit.path][limit.method]
    url = limit.path.replace("{id}", job_id)
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if limit.location == "path":
        url = limit.path.replace("{id}", str(probe.value))
    elif limit.location == "header":
        headers[limit.name] = str(probe.value)
    elif limit.location == "query":
        params[limit.name] = str(probe.value)
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if "text/event-stream" in operation["responses"].get("200", {}).get("content", {}):
        # A stream that never ends by itself: its status and headers are the answer.
        with http.stream(limit.method.upper(), url, params=params, headers=headers) as response:
            if response.status_code != 200:
                response.read()
            return response
    if body is None:
        return http.request(limit.method.upper(), url, params=params, headers=headers)
    return http.request(
        limit.method.upper(),
        url,
        params=params,
        headers=headers,
        json=request_body(probe, body["schema"]),
    )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def grpc_field(probe: Probe) -> str:
    limit = probe.limit
    if limit.location == "body":
        return "spec." + field_name(
            tuple(_snake(p) if isinstance(p, str) else p for p in limit.json_path)
        )
    return GRPC_FIELD_OF_PARAMETER[(limit.location, limit.name)]


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    assert isinstance(error, grpc.Call)
    status = rpc_status.from_call(error)
    assert status is not None, f"no status details: {error.details()}"
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields += [violation.field for violation in bad_request.field_violations]
    return fields


def assert_invalid_argument(error: grpc.RpcError, expected_field: str) -> None:
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert bad_request_fields(error) == [expected_field], error.details()


def refused_over_grpc(
    probe: Probe,
    export_stub: export_pb2_grpc.ExportServiceStub,
    render_stub: render_pb2_grpc.RenderServiceStub,
) -> None:
    limit = probe.limit
    expected = grpc_field(probe)
    if limit.location == "path":
        with pytest.raises(grpc.RpcError) as caught:
            export_stub.GetExport(export_pb2.GetExportRequest(id=probe.value), timeout=10)
        assert_invalid_argument(caught.value, expected)
        return
    if limit.location == "header":
        request = export_pb2.CreateExportRequest(
            request_id=probe.value,
            spec=json_format.ParseDict(minimal_spec(), spec_pb2.RenderSpec()),
        )
        with pytest.raises(grpc.RpcError) as caught:
            export_stub.CreateExport(request, timeout=10)
        assert_invalid_argument(caught.value, expected)
        return
    body = request_body(probe, render_spec_schema())
    if _unsigned_below_zero(probe):
        # The proto's own type refuses it: no gRPC client can send it.
        with pytest.raises(json_format.ParseError):
            json_format.ParseDict(body, spec_pb2.RenderSpec())
        return
    spec = json_format.ParseDict(body, spec_pb2.RenderSpec())
    with pytest.raises(grpc.RpcError) as caught:
        export_stub.CreateExport(
            export_pb2.CreateExportRequest(request_id=uuid.uuid4().hex, spec=spec), timeout=10
        )
    assert_invalid_argument(caught.value, expected)
    with pytest.raises(grpc.RpcError) as caught:
        for _ in render_stub.Render(
            render_pb2.RenderRequest(render_id=uuid.uuid4().hex, spec=spec), timeout=10
        ):
            pass
    assert_invalid_argument(caught.value, expected)


def _unsigned_below_zero(probe: Probe) -> bool:
    """A negative value for an unsigned field of the spec (``output.split.parts``)."""
    if not isinstance(probe.value, int) or probe.value >= 0:
        return False
    message: Descriptor | None = spec_pb2.RenderSpec.DESCRIPTOR
    field = None
    for name in probe.limit.json_path:
        if isinstance(name, int) or message is None:
            continue
        field = message.fields_by_camelcase_name[name]
        message = field.message_type
    unsigned = (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64)
    return field is not None and field.type in unsigned


def render_spec_schema() -> Schema:
    operation = OPENAPI_DOCUMENT["paths"]["/api/jobs"]["post"]
    schema: Schema = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def minimal_spec() -> Any:
    return minimal(render_spec_schema())


def cancel(http: httpx.Client, job: dict[str, Any]) -> None:
    response = http.post(f"/api/jobs/{job['id']}/cancel")
    # 409: it had already ended (an input that does not exist fails it at once).
    assert response.status_code in (200, 409), response.text


# --- The tests ---------------------------------------------------------------------------------


def test_the_walk_finds_the_limits_of_every_kind_and_place() -> None:
    found = {(limit.location, limit.keyword) for limit in document_limits()}
    for location, keyword in [
        ("header", "maxLength"),
        ("path", "maxLength"),
        ("query", "maximum"),
        ("query", "minimum"),
        ("query", "enum"),
        ("body", "maximum"),
        ("body", "minimum"),
        ("body", "maxLength"),
        ("body", "enum"),
        ("body", "maxItems"),
    ]:
        assert (location, keyword) in found, (location, keyword)
    header = next(limit for limit in document_limits() if limit.name == "Idempotency-Key")
    assert header.bound == limits.MAX_REQUEST_ID_LENGTH
    webm_codecs = {
        limit.bound[0]
        for limit in document_limits()
        if limit.name == "output.videoCodec" and limit.context
        and dict(limit.context)[("output", "container")] == "webm"
    }  # fmt: skip
    assert webm_codecs == {limits.VIDEO_CODECS_BY_CONTAINER["webm"][0]}


def input_file_missing(response: httpx.Response) -> bool:
    """A create whose values all passed, refused for what the render service found at create
    time: the input file the spec names does not exist (the probes name files nobody made)."""
    if response.status_code != 422:
        return False
    body = response.json()
    field = body.get("field", "")
    is_input = field.endswith(("inputPath", "imagePath", "audioPath", "subtitlesPath"))
    return is_input and "file not found" in body.get("message", "")


@pytest.mark.parametrize("probe", ALL_PROBES, ids=_probe_id)
def test_each_documented_limit_is_what_the_stack_enforces(
    probe: Probe,
    http: httpx.Client,
    export_stub: export_pb2_grpc.ExportServiceStub,
    render_stub: render_pb2_grpc.RenderServiceStub,
    job_id: str,
) -> None:
    limit = probe.limit
    operation = OPENAPI_DOCUMENT["paths"][limit.path][limit.method]
    response = send(http, probe, job_id)
    if probe.accepted:
        if limit.location == "path":
            # Within the limit the id is the export service's to judge: no job has it.
            assert response.status_code == 404, response.text
            with pytest.raises(grpc.RpcError) as caught:
                export_stub.GetExport(export_pb2.GetExportRequest(id=probe.value), timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            return
        if input_file_missing(response):
            return
        assert response.status_code in (200, 201), response.text
        if response.status_code == 201:
            job = response.json()
            if limit.location == "header":
                assert job["requestId"] == probe.value
            cancel(http, job)
        return
    status = limit.refused_with
    assert str(status) in operation["responses"], f"the document declares no {status}"
    assert response.status_code == status, response.text
    if limit.location != "path":
        assert response.json().get("field") == limit.name, response.text
    if (limit.location, limit.name) in GRPC_FIELD_OF_PARAMETER or limit.location == "body":
        refused_over_grpc(probe, export_stub, render_stub)


def test_an_idempotency_key_longer_than_the_old_export_limit_creates_one_job(
    http: httpx.Client,
) -> None:
    """150 characters: documented as valid, once refused by the export service (limit 128)."""
    key = _text(150, "header")
    first = http.post("/api/jobs", json=minimal_spec(), headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    again = http.post("/api/jobs", json=minimal_spec(), headers={"Idempotency-Key": key})
    assert again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]
    cancel(http, first.json())
