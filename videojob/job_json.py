"""The HTTP API's JSON vocabulary, shared by the gateway and the CLI: VideoJob proto <-> the
pinned job JSON, and RenderSpec JSON (camelCase) -> proto."""

from __future__ import annotations

import logging
import re
from datetime import UTC
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from videojob import limits
from videojob.errors import InvalidArgument
from videojob.export.v1 import export_pb2
from videojob.json_schema import SchemaChecker
from videojob.render.v1 import spec_pb2
from videojob.spec_schema import SPEC_SCHEMAS

logger = logging.getLogger(__name__)

STATUS_NAMES: dict[int, str] = {
    export_pb2.JobStatus.Value(name): name.lower() for name in limits.JOB_STATUSES
}
STATUS_BY_NAME: dict[str, export_pb2.JobStatus.ValueType] = {
    name: export_pb2.JobStatus.ValueType(value) for value, name in STATUS_NAMES.items()
}
TERMINAL_STATUSES = frozenset(
    export_pb2.JobStatus.Value(name) for name in limits.TERMINAL_JOB_STATUSES
)

_SPEC_CHECKER = SchemaChecker(SPEC_SCHEMAS)
_SNAKE_SEGMENT = re.compile(r"_([a-z0-9])")


_STATUS_BY_PROTO_NAME = {
    export_pb2.JobStatus.Name(value): name for name, value in STATUS_BY_NAME.items()
}
# Request fields outside the spec, by the name the HTTP API gives them.
_HTTP_NAME_OF_REQUEST_FIELD = {
    "request_id": "Idempotency-Key",
    "id": "id",
    "page_token": "cursor",
    "page_size": "limit",
    "status": "status",
    "after_version": "Last-Event-ID",
}


def camel_case_path(path: str) -> str:
    """``spec.output.video_codec`` -> ``output.videoCodec``: a proto field path as the HTTP
    client wrote it (camelCase, relative to the request body)."""
    if path == "spec":
        return "body"
    if path.startswith("spec."):
        path = path[len("spec.") :]
    return _SNAKE_SEGMENT.sub(lambda match: match.group(1).upper(), path)


def http_field(proto_path: str) -> str:
    """The HTTP API's name for a field a gRPC error names by its proto path:
    ``spec.source.transcode.input_path`` -> ``source.transcode.inputPath``, ``request_id`` ->
    ``Idempotency-Key``, ``id`` -> the ``{id}`` path parameter."""
    if proto_path in _HTTP_NAME_OF_REQUEST_FIELD:
        return _HTTP_NAME_OF_REQUEST_FIELD[proto_path]
    return camel_case_path(proto_path)


def http_message(proto_path: str, message: str) -> str:
    """``message`` with its leading ``<proto path>: `` (if it has one) in the API's words."""
    prefix = f"{proto_path}: "
    if proto_path and message.startswith(prefix):
        return f"{http_field(proto_path)}: {message[len(prefix) :]}"
    return message


def api_status_name(proto_name: str) -> str:
    """``COMPLETED`` -> ``completed``: a JobStatus name as the HTTP API spells statuses."""
    return _STATUS_BY_PROTO_NAME.get(proto_name, proto_name.lower())


def spec_from_json(body: Any) -> spec_pb2.RenderSpec:
    """The RenderSpec for a request body; InvalidArgument naming the JSON field otherwise."""
    _SPEC_CHECKER.check(body, SPEC_SCHEMAS["RenderSpec"])
    spec = spec_pb2.RenderSpec()
    try:
        json_format.ParseDict(body, spec)
    except json_format.ParseError as exc:
        # The document's schema admitted it, the proto did not: a gap between the two, whose
        # words (proto type names) are the log's, not the client's.
        logger.warning("a request body the schema admits is no RenderSpec: %s", exc)
        raise InvalidArgument("body", "cannot be read as a RenderSpec") from None
    return spec


NOTIFY_EVENTS: dict[str, export_pb2.WebhookEvents.ValueType] = {
    "terminal": export_pb2.WEBHOOK_EVENTS_TERMINAL,
    "all": export_pb2.WEBHOOK_EVENTS_STATUS_CHANGES,
}
DELIVERY_STATES = {
    export_pb2.DELIVERY_PENDING: "pending",
    export_pb2.DELIVERY_DELIVERED: "delivered",
    export_pb2.DELIVERY_GAVE_UP: "gave_up",
}


def notify_from_json(body: Any) -> export_pb2.WebhookEndpoint | None:
    """The webhook endpoint a create's body names beside ``source`` and ``output``
    (``notify: {url, events}``; events ``terminal``, the default, or ``all``), removed from
    ``body``; None when it names none. InvalidArgument naming the field otherwise."""
    if not isinstance(body, dict) or "notify" not in body:
        return None
    notify = body.pop("notify")
    if not isinstance(notify, dict):
        raise InvalidArgument("notify", "must be an object: {url, events}")
    unknown = sorted(set(notify) - {"url", "events"})
    if unknown:
        raise InvalidArgument(f"notify.{unknown[0]}", "is not a field of notify")
    url = notify.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidArgument("notify.url", "is required: an http:// or https:// URL")
    events = notify.get("events", "terminal")
    if events not in NOTIFY_EVENTS:
        raise InvalidArgument("notify.events", f"must be one of {', '.join(NOTIFY_EVENTS)}")
    return export_pb2.WebhookEndpoint(url=url, events=NOTIFY_EVENTS[events])


def delivery_to_json(delivery: export_pb2.WebhookDelivery) -> dict[str, Any]:
    """One webhook delivery of a job (ListJobDeliveries' WebhookDelivery) in camelCase."""
    return {
        "id": delivery.id,
        "type": delivery.type,
        "url": delivery.url,
        "state": DELIVERY_STATES.get(delivery.state, "pending"),
        "attempts": delivery.attempts,
        "lastStatusCode": delivery.last_status_code or None,
        "lastError": delivery.last_error or None,
        "lastResponse": delivery.last_response or None,
        "jobVersion": delivery.job_version,
        "createdAt": _timestamp(delivery, "created_at"),
        "lastAttemptAt": _timestamp(delivery, "last_attempt_at"),
        "nextAttemptAt": _timestamp(delivery, "next_attempt_at"),
        "finishedAt": _timestamp(delivery, "finished_at"),
    }


def _timestamp(
    message: export_pb2.VideoJob
    | export_pb2.JobHistoryEntry
    | export_pb2.RenderAttempt
    | export_pb2.WebhookDelivery,
    name: str,
) -> str | None:
    if not message.HasField(name):  # type: ignore[arg-type]
        return None
    value: Timestamp = getattr(message, name)
    moment = value.ToDatetime(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_to_json(job: export_pb2.VideoJob) -> dict[str, Any]:
    """The pinned job object, plus the extensions etaSeconds, requestId, outputSizeBytes,
    outputDurationSeconds, spec, the render pool's retrying, attemptProgress, renderService and
    attempts, awaitingOwner, queuePosition and estimatedStartAt (derived by the export service
    as it read the job), outputSha256 (an output stored in an object store: the whole file's
    SHA-256) and stageProgress (0-100 of the current stage, e.g. bytes uploaded while Uploading;
    null when the stage has no measure), a split job's parts (and its join, last) and why a
    job renders whole (splitReason); and notifySecret in the answer of the create that
    named a webhook endpoint (nowhere else)."""
    running = job.status == export_pb2.RUNNING
    completed = job.status == export_pb2.COMPLETED
    error: dict[str, Any] | None = None
    if job.HasField("error") and (job.error.code or job.error.message):
        error = {
            "code": job.error.code,
            "message": http_message(job.error.field, job.error.message),
        }
        if job.error.field:
            error["field"] = http_field(job.error.field)
        if job.error.log_tail:
            error["logLines"] = job.error.log_tail.splitlines()
    shown = {
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
        "retrying": job.retrying,
        "attemptProgress": job.attempt_progress,
        "renderService": _render_service(job.render_service)
        if job.HasField("render_service")
        else None,
        "attempts": [_attempt_to_json(attempt) for attempt in job.attempts],
        "awaitingOwner": job.awaiting_owner,
        "queuePosition": job.queue_position or None,
        "estimatedStartAt": _timestamp(job, "estimated_start_at"),
        "outputSha256": job.output_sha256 or None,
        "stageProgress": job.stage_progress if running and job.stage_progress > 0 else None,
        "parts": [_part_to_json(part) for part in job.parts],
        "splitReason": job.split_reason or None,
    }
    if job.notify_secret:  # the create's answer alone has it
        shown["notifySecret"] = job.notify_secret
    return shown


def _render_service(service: export_pb2.RenderService) -> dict[str, Any] | None:
    if not service.instance_id and not service.address:
        return None
    return {"instanceId": service.instance_id, "address": service.address}


def _attempt_to_json(attempt: export_pb2.RenderAttempt) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "renderId": attempt.render_id,
        "renderService": _render_service(attempt.render_service),
        "startedAt": _timestamp(attempt, "started_at"),
        "finishedAt": _timestamp(attempt, "finished_at"),
        "outcome": attempt.outcome or None,
    }


def _part_to_json(part: export_pb2.JobPart) -> dict[str, Any]:
    return {
        "index": part.index,
        "join": part.join,
        "audio": part.audio,
        "firstFrame": part.first_frame,
        "frameCount": part.frame_count,
        "state": part.state,
        "renderId": part.render_id or None,
        "renderService": _render_service(part.render_service),
        "framesDone": part.frames_done,
        "attempts": part.attempts,
        "note": part.note or None,
    }


def history_entry_to_json(entry: export_pb2.JobHistoryEntry) -> dict[str, Any]:
    """One version of a job's history (ListJobHistory's JobHistoryEntry) in camelCase."""
    return {
        "version": entry.version,
        "change": entry.change,
        "status": STATUS_NAMES.get(entry.status, "queued"),
        "progress": entry.progress,
        "stage": entry.stage,
        "attempt": entry.attempt,
        "renderSeq": entry.render_seq,
        "errorCode": entry.error_code or None,
        "time": _timestamp(entry, "time"),
        "writer": entry.writer,
        "owner": entry.owner if entry.HasField("owner") else None,
        "leaseEpoch": entry.lease_epoch if entry.HasField("lease_epoch") else None,
    }


def is_terminal(job: export_pb2.VideoJob) -> bool:
    return job.status in TERMINAL_STATUSES


def sse_event_name(job: export_pb2.VideoJob) -> str:
    """``progress`` for a non-terminal state, else ``completed``/``failed``/``cancelled``."""
    return STATUS_NAMES[job.status] if is_terminal(job) else "progress"
