"""VideoJob proto <-> the pinned job JSON, and RenderSpec JSON (camelCase) -> proto."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.json_schema import SchemaChecker
from gateway.openapi import COMPONENT_SCHEMAS
from videojob.errors import InvalidArgument
from videojob.export.v1 import export_pb2
from videojob.render.v1 import spec_pb2

STATUS_NAMES: dict[int, str] = {
    export_pb2.QUEUED: "queued",
    export_pb2.RUNNING: "running",
    export_pb2.COMPLETED: "completed",
    export_pb2.FAILED: "failed",
    export_pb2.CANCELLED: "cancelled",
}
STATUS_BY_NAME: dict[str, export_pb2.JobStatus.ValueType] = {
    name: export_pb2.JobStatus.ValueType(value) for value, name in STATUS_NAMES.items()
}
TERMINAL_STATUSES = frozenset({export_pb2.COMPLETED, export_pb2.FAILED, export_pb2.CANCELLED})

_SPEC_CHECKER = SchemaChecker(COMPONENT_SCHEMAS)
_SNAKE_SEGMENT = re.compile(r"_([a-z0-9])")


def camel_case_path(path: str) -> str:
    """``spec.output.video_codec`` -> ``output.videoCodec``: a proto field path as the HTTP
    client wrote it (camelCase, relative to the request body)."""
    if path == "spec":
        return "body"
    if path.startswith("spec."):
        path = path[len("spec.") :]
    return _SNAKE_SEGMENT.sub(lambda match: match.group(1).upper(), path)


def camel_case_message(message: str) -> tuple[str, str | None]:
    """Translates an export-service validation message ``<proto path>: <problem>`` into
    ``<json path>: <problem>``; returns the message and the field (None when none is named)."""
    field, separator, problem = message.partition(": ")
    if not separator or " " in field or not field.startswith("spec"):
        return message, None
    json_field = camel_case_path(field)
    return f"{json_field}: {problem}", json_field


def spec_from_json(body: Any) -> spec_pb2.RenderSpec:
    """The RenderSpec for a request body; InvalidArgument naming the JSON field otherwise."""
    _SPEC_CHECKER.check(body, COMPONENT_SCHEMAS["RenderSpec"])
    spec = spec_pb2.RenderSpec()
    try:
        json_format.ParseDict(body, spec)
    except json_format.ParseError as exc:
        raise InvalidArgument("body", str(exc)) from None
    return spec


def _timestamp(job: export_pb2.VideoJob, name: str) -> str | None:
    if not job.HasField(name):  # type: ignore[arg-type]
        return None
    value: Timestamp = getattr(job, name)
    moment = value.ToDatetime(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_to_json(job: export_pb2.VideoJob) -> dict[str, Any]:
    """The pinned job object, plus the extensions etaSeconds, requestId, outputSizeBytes,
    outputDurationSeconds and spec."""
    running = job.status == export_pb2.RUNNING
    completed = job.status == export_pb2.COMPLETED
    error = (
        {"code": job.error.code, "message": job.error.message}
        if job.HasField("error") and (job.error.code or job.error.message)
        else None
    )
    return {
        "id": job.id,
        "status": STATUS_NAMES.get(job.status, "queued"),
        "progress": job.progress,
        "stage": job.stage,
        "outputPath": job.output_path or None,
        "error": error,
        "attempt": job.attempt,
        "version": job.version,
        "createdAt": _timestamp(job, "created_at"),
        "updatedAt": _timestamp(job, "updated_at"),
        "startedAt": _timestamp(job, "started_at"),
        "finishedAt": _timestamp(job, "finished_at"),
        "etaSeconds": job.eta_seconds if running and job.eta_seconds > 0 else None,
        "requestId": job.request_id,
        "outputSizeBytes": job.output_size_bytes if completed else None,
        "outputDurationSeconds": job.output_duration_seconds if completed else None,
        "spec": json_format.MessageToDict(job.spec),
    }


def is_terminal(job: export_pb2.VideoJob) -> bool:
    return job.status in TERMINAL_STATUSES


def sse_event_name(job: export_pb2.VideoJob) -> str:
    """``progress`` for a non-terminal state, else ``completed``/``failed``/``cancelled``."""
    return STATUS_NAMES[job.status] if is_terminal(job) else "progress"
