"""The gateway's OpenAPI 3.1 document, built once.

``COMPONENT_SCHEMAS`` start with the RenderSpec's (videojob.spec_schema), which are also what
``POST /api/jobs`` checks its body against (videojob.json_schema), so the document describes
exactly what the route accepts.
"""

from __future__ import annotations

from typing import Any

from videojob import limits
from videojob.spec_schema import SPEC_SCHEMAS

JOB_STATUSES = list(limits.API_JOB_STATUSES)
MAX_LIST_LIMIT = limits.MAX_LIST_LIMIT
DEFAULT_LIST_LIMIT = limits.DEFAULT_LIST_LIMIT
MAX_WATCH_IDS = limits.MAX_WATCH_IDS
# The Idempotency-Key is the export service's request id: the same limit on both sides.
MAX_IDEMPOTENCY_KEY_LENGTH = limits.MAX_REQUEST_ID_LENGTH
CURSOR_PATTERN = "^[A-Za-z0-9_-]{1,400}$"
# The export service's own limit on job ids; a longer id cannot name a job (404).
MAX_JOB_ID_LENGTH = limits.MAX_JOB_ID_LENGTH
VERSION_PATTERN = f"^[0-9]{{1,{limits.MAX_VERSION_DIGITS}}}$"
MAX_VERSION = 10**limits.MAX_VERSION_DIGITS - 1
_WATCH_ID = f"[^,]{{1,{MAX_JOB_ID_LENGTH}}}"
WATCH_IDS_PATTERN = f"^({_WATCH_ID}(,{_WATCH_ID}){{0,{MAX_WATCH_IDS - 1}}})?$"

COMPONENT_SCHEMAS: dict[str, dict[str, Any]] = {
    **SPEC_SCHEMAS,
    "CreateJob": {
        **SPEC_SCHEMAS["RenderSpec"],
        "description": (
            "The RenderSpec, and beside it the job's options that are not part of what to "
            "render: `notify`, a webhook endpoint."
        ),
        "properties": {
            **SPEC_SCHEMAS["RenderSpec"]["properties"],
            "notify": {"$ref": "#/components/schemas/Notify"},
        },
    },
    "Notify": {
        "type": "object",
        "description": (
            "A webhook endpoint told of the job's changes by signed CloudEvents (Standard "
            "Webhooks signatures; the secret is `notifySecret` in this create's answer, and "
            "nowhere else). A URL whose host does not resolve, or resolves to a loopback, "
            "private or link-local address, is refused (422, `field` `notify.url`) unless the "
            "operator allows private destinations."
        ),
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
            "events": {
                "type": "string",
                "enum": ["terminal", "all"],
                "default": "terminal",
                "description": "The terminal state only, or every status change.",
            },
        },
    },
    "Delivery": {
        "type": "object",
        "description": "One event owed to one webhook endpoint, and how its attempts went.",
        "required": ["id", "type", "url", "state", "attempts"],
        "properties": {
            "id": {
                "type": "string",
                "description": "The `webhook-id` header: the same on every attempt.",
            },
            "type": {"type": "string", "description": "dev.videojob.export.<status>"},
            "url": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "delivered", "gave_up"]},
            "attempts": {"type": "integer", "minimum": 0},
            "lastStatusCode": {"type": ["integer", "null"]},
            "lastError": {"type": ["string", "null"]},
            "lastResponse": {
                "type": ["string", "null"],
                "description": "At most a few hundred bytes of the last answer's body.",
            },
            "jobVersion": {"type": "integer"},
            "createdAt": {"type": ["string", "null"], "format": "date-time"},
            "lastAttemptAt": {"type": ["string", "null"], "format": "date-time"},
            "nextAttemptAt": {"type": ["string", "null"], "format": "date-time"},
            "finishedAt": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "Deliveries": {
        "type": "object",
        "required": ["deliveries"],
        "properties": {
            "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/Delivery"}}
        },
    },
    "JobError": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "field": {
                "type": "string",
                "description": "The spec field the error is about (source.transcode.inputPath).",
            },
            "logLines": {
                "type": "array",
                "items": {"type": "string"},
                "description": (
                    f"The last lines of ffmpeg's log (at most {limits.MAX_LOG_TAIL_LINES} lines, "
                    f"{limits.MAX_LOG_TAIL_BYTES} bytes), when ffmpeg had a say in the failure."
                ),
            },
        },
    },
    "JobPart": {
        "type": "object",
        "properties": {
            "index": {"type": "integer", "description": "0-based in plan order."},
            "join": {"type": "boolean", "description": "The join of the parts."},
            "audio": {
                "type": "boolean",
                "description": "The whole output's audio, rendered beside the parts.",
            },
            "firstFrame": {"type": "integer"},
            "frameCount": {"type": "integer"},
            "state": {
                "type": "string",
                "enum": ["pending", "queued", "rendering", "retrying", "done"],
                "description": "queued: placed, waiting for a slot on its render service.",
            },
            "renderId": {"type": ["string", "null"]},
            "renderService": {"type": ["object", "null"]},
            "framesDone": {"type": "integer"},
            "attempts": {"type": "integer", "description": "Attempts started for this part."},
            "note": {"type": ["string", "null"], "description": "Why it renders again."},
        },
    },
    "Job": {
        "type": "object",
        "required": [
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
        ],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": JOB_STATUSES},
            "progress": {"type": "number", "minimum": 0, "maximum": 100},
            "stage": {
                "type": "string",
                "description": (
                    "Where the job stands. As the render reports it: `Queued`, `Preparing`, "
                    "`Rendering`, `Finalizing`, `Verifying`, `Uploading` (an output stored in "
                    "an object store; `stageProgress` shows its bytes); `Complete`, `Failed`, "
                    "`Cancelled` "
                    "once terminal. The export service's own: "
                    f"`{limits.STAGE_WAITING_FOR_RENDER}` while the render service of the "
                    "job's attempt does not answer and its owner keeps asking (progress kept, "
                    "no ETA, `retrying` true; written by the job's owner), and "
                    f"`{limits.STAGE_WAITING_FOR_OWNER}` while no export replica drives the "
                    "job (`awaitingOwner`; derived as it is read, never stored)."
                ),
            },
            "outputPath": {
                "type": ["string", "null"],
                "description": "The finished file: a path, or `s3://BUCKET/KEY` when the "
                "render services store their outputs in an object store (download it with "
                "`GET /api/jobs/{id}/download`).",
            },
            "error": {"oneOf": [{"$ref": "#/components/schemas/JobError"}, {"type": "null"}]},
            "attempt": {"type": "integer"},
            "version": {"type": "integer"},
            "createdAt": {"type": ["string", "null"], "format": "date-time"},
            "updatedAt": {"type": ["string", "null"], "format": "date-time"},
            "startedAt": {"type": ["string", "null"], "format": "date-time"},
            "finishedAt": {"type": ["string", "null"], "format": "date-time"},
            "etaSeconds": {
                "type": ["number", "null"],
                "description": "While running: the render's estimate of the seconds left, to a "
                "tenth of a second.",
            },
            "requestId": {"type": "string"},
            "outputSizeBytes": {"type": ["integer", "null"]},
            "outputDurationSeconds": {"type": ["number", "null"]},
            "outputSha256": {
                "type": ["string", "null"],
                "description": "An output stored in an object store: the whole file's SHA-256 "
                "(hex), as the render computed it while uploading; null otherwise.",
            },
            "stageProgress": {
                "type": ["number", "null"],
                "minimum": 0,
                "maximum": 100,
                "description": "While running, in a stage with a measure of its own "
                "(`Uploading`: bytes the store acknowledged of the file's size): 0 to 100 of "
                "that stage, while `progress` stays within 95-99; null otherwise.",
            },
            "spec": {"type": "object", "description": "The RenderSpec as the service stored it."},
            "parts": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/JobPart"},
                "description": "A split job's parts in plan order, each rendered by a render of "
                "its own, then the join of the parts (`join` true); empty for a job that renders "
                "whole.",
            },
            "splitReason": {
                "type": ["string", "null"],
                "description": "Why the job renders whole under the operator's policy (its "
                "source cannot be split safely); null otherwise.",
            },
            "notifySecret": {
                "type": "string",
                "description": "In the answer of the create that named `notify` alone: the "
                "secret (whsec_...) that signs its webhook deliveries (Standard Webhooks).",
            },
            "retrying": {
                "type": "boolean",
                "description": (
                    "The export service retries the job's render: it was submitted again "
                    "(attempt 2 or later: `progress` keeps the job's, it never decreases, "
                    "`attemptProgress` is the new render's own and `etaSeconds` its ETA), or "
                    f"the job shows `{limits.STAGE_WAITING_FOR_RENDER}`."
                ),
            },
            "attemptProgress": {
                "type": "number",
                "minimum": 0,
                "maximum": 100,
                "description": "The current attempt's own progress.",
            },
            "renderService": {
                "oneOf": [{"$ref": "#/components/schemas/RenderService"}, {"type": "null"}],
                "description": "The render service the current attempt runs on (null: not placed).",
            },
            "attempts": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/RenderAttempt"},
                "description": (
                    "Every placement of the job's render, oldest first; superseded ones stay."
                ),
            },
            "awaitingOwner": {
                "type": "boolean",
                "description": (
                    "No export replica drives the active job now: its owner stopped renewing "
                    "its lease (or handed the job back) and no other has taken it over yet. "
                    "Derived when the job is read, never stored (the version does not change): "
                    f"`stage` then reads `{limits.STAGE_WAITING_FOR_OWNER}` and `etaSeconds` is "
                    "null. `GET /api/events` sends the job again when this changes."
                ),
            },
            "inputNames": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": (
                    "The original file names of the job's inputs that are uploads, by input "
                    "path (`uploads/…` -> `holiday.mov`), for display: read by the gateway "
                    "from the uploads' records, in every view of the job (create, get, list, "
                    "cancel, both event streams); `{}` when none of its inputs is one."
                ),
            },
            "queuePosition": {
                "type": ["integer", "null"],
                "minimum": 1,
                "description": (
                    "While the job waits for a render slot (queued, or a resubmitted render "
                    "queued again): its place in the line of the render service it is placed "
                    "on, 1 being the next to start there. A render service starts its queued "
                    "renders in the order they came; the line holds the waiting jobs placed on "
                    "it, in the order they were placed, whichever export replica placed them "
                    "(jobs on other render services are in other lines). Null when the job "
                    "waits for no slot or is not placed yet. Derived when the job is read (from "
                    "a view of the jobs at most a second old), never stored: the version does "
                    "not change as the line moves, so a page re-reads a waiting job to follow it."
                ),
            },
            "estimatedStartAt": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": (
                    "When the waiting job is expected to start: when a slot of its render "
                    "service frees for it, from the ETAs of the renders running there and, for "
                    "each job ahead in the line, the mean run time of the jobs that last "
                    "completed on that render service. Null when that cannot be known: nothing "
                    "completed there yet while jobs wait ahead (or a running render has no "
                    "ETA), the render service does not answer or does not say its slots, or "
                    "the job waits for a render service or for its export replica. Derived "
                    "when read, like `queuePosition`."
                ),
            },
        },
    },
    "RenderService": {
        "type": "object",
        "required": ["instanceId", "address"],
        "properties": {
            "instanceId": {"type": "string", "description": "Stable across its restarts."},
            "address": {"type": "string"},
        },
    },
    "RenderAttempt": {
        "type": "object",
        "required": ["attempt", "renderId", "renderService", "startedAt", "finishedAt", "outcome"],
        "properties": {
            "attempt": {"type": "integer", "minimum": 1},
            "renderId": {"type": "string"},
            "renderService": {
                "oneOf": [{"$ref": "#/components/schemas/RenderService"}, {"type": "null"}]
            },
            "startedAt": {"type": ["string", "null"], "format": "date-time"},
            "finishedAt": {"type": ["string", "null"], "format": "date-time"},
            "outcome": {
                "type": ["string", "null"],
                "description": "Why it ended (superseded by attempt 2), or the job's status.",
            },
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "nextCursor"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "nextCursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    },
    "JobEvent": {
        "type": "object",
        "description": "One Server-Sent Event of a job's stream.",
        "properties": {
            "event": {"type": "string", "enum": ["progress", *limits.API_TERMINAL_JOB_STATUSES]},
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The job's version."},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/Job"},
            },
            "retry": {"type": "integer"},
        },
    },
    "JobListEvent": {
        "type": "object",
        "description": "One Server-Sent Event of the page's stream (GET /api/events).",
        "properties": {
            "event": {"const": "job"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/Job"},
            },
            "retry": {"type": "integer"},
        },
    },
    "HistoryEntry": {
        "type": "object",
        "description": "One committed change of a job: the version it made and the job then.",
        "required": [
            "version",
            "change",
            "status",
            "progress",
            "stage",
            "attempt",
            "renderSeq",
            "errorCode",
            "time",
            "writer",
            "owner",
            "leaseEpoch",
        ],
        "properties": {
            "version": {"type": "integer", "minimum": 1},
            "change": {
                "type": "string",
                "description": (
                    "create, progress, begin_attempt (a lost render submitted again: attempt "
                    "+ 1), complete, fail, cancel; migrated for the state of a job older than "
                    "the history. Intermediate progress is coalesced as the job's is."
                ),
            },
            "status": {"type": "string", "enum": JOB_STATUSES},
            "progress": {"type": "number", "minimum": 0, "maximum": 100},
            "stage": {"type": "string"},
            "attempt": {"type": "integer"},
            "renderSeq": {
                "type": "integer",
                "description": "The last render event stored with this version.",
            },
            "errorCode": {"type": ["string", "null"]},
            "time": {"type": ["string", "null"], "format": "date-time"},
            "writer": {
                "type": "string",
                "description": "The process that wrote it (name@host:pid).",
            },
            "owner": {
                "type": ["string", "null"],
                "description": "The replica owning the job then, once jobs have owners.",
            },
            "leaseEpoch": {"type": ["integer", "null"]},
        },
    },
    "JobHistory": {
        "type": "object",
        "required": ["entries", "nextAfterVersion"],
        "properties": {
            "entries": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}},
            "nextAfterVersion": {
                "type": ["integer", "null"],
                "description": "Pass as `afterVersion` for the next page; null on the last page.",
            },
        },
    },
    "Upload": {
        "type": "object",
        "required": ["path", "sizeBytes", "format"],
        "properties": {
            "path": {
                "type": "string",
                "description": (
                    "Relative to the media root: uploads/<name chosen by the gateway>, with the "
                    "extension of the format ffmpeg found (not the client's)."
                ),
            },
            "originalName": {"$ref": "#/components/schemas/OriginalName"},
            "transcodable": {"$ref": "#/components/schemas/Transcodable"},
            "sizeBytes": {"type": "integer"},
            "format": {"type": "string", "description": "ffmpeg's demuxer names (mov,mp4,…)."},
            "durationSeconds": {"type": ["number", "null"]},
            "width": {"type": ["integer", "null"]},
            "height": {"type": ["integer", "null"]},
            "videoCodec": {"type": ["string", "null"]},
            "audioCodec": {"type": ["string", "null"]},
        },
    },
    "OriginalName": {
        "type": ["string", "null"],
        "description": (
            "The file name the upload was sent with (`filename`), for display only: its last "
            "path segment without control characters, at most 255 characters. Null for files "
            "that were not uploaded, or uploaded without a name."
        ),
    },
    "Transcodable": {
        "type": "boolean",
        "description": (
            "Whether a transcode takes it as `inputPath`: a video stream with a duration (not "
            "a still image, not audio alone). From what ffmpeg found at upload; for files put "
            "into the media root otherwise, from the extension."
        ),
    },
    "MediaList": {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path", "sizeBytes", "modifiedAt"],
                    "properties": {
                        "path": {"type": "string", "description": "Relative to the media root."},
                        "originalName": {"$ref": "#/components/schemas/OriginalName"},
                        "transcodable": {"$ref": "#/components/schemas/Transcodable"},
                        "sizeBytes": {"type": "integer"},
                        "modifiedAt": {"type": "string", "format": "date-time"},
                    },
                },
            }
        },
    },
    "Error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "e.g. not_found, invalid_argument"},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "The offending field, when one is known."},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "export": {"type": "string"},
            "message": {"type": "string"},
            "renders": {
                "type": "string",
                "description": "Whether the export service reaches its render services "
                "(SERVING, NOT_SERVING; UNREACHABLE when the export service does not answer). "
                "Jobs are accepted either way and wait for a render service.",
            },
            "store": {
                "type": "string",
                "description": "With the media root in an object store (readiness only): ok, "
                "or why the store does not answer.",
            },
        },
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _retry_later(description: str) -> dict[str, Any]:
    return {
        **_error(description),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "minimum": 0},
            }
        },
    }


def _job(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
    }


# The HTTP status a value outside a parameter's (or a request body's) documented bounds gets.
REFUSED_WITH = "x-refused-with"

JOB_ID_PARAMETER: dict[str, Any] = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_JOB_ID_LENGTH},
    REFUSED_WITH: 404,
}
ACCESS_TOKEN_PARAMETER: dict[str, Any] = {
    "name": "access_token",
    "in": "query",
    "required": False,
    "description": "The API token, for clients that cannot send an Authorization header.",
    "schema": {"type": "string"},
}

_API_ERRORS: dict[str, Any] = {
    "401": _error("The API token is missing or wrong (only when the gateway has one)."),
    "429": _retry_later("The export service is at capacity."),
    "503": _retry_later("The export service is unreachable."),
    "504": _error("The export service did not answer in time."),
}


def _build() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "videojob gateway",
            "version": "1.0.0",
            "description": "Render videos with FFmpeg and follow each job's progress truthfully.",
        },
        "components": {
            "schemas": COMPONENT_SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/jobs": {
                "post": {
                    "operationId": "createJob",
                    "summary": "Start a render. The same Idempotency-Key returns the same job.",
                    "security": [{"bearer": []}, {}],
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
                                "pattern": "^[\\x21-\\x7e]+$",
                            },
                            REFUSED_WITH: 400,
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        REFUSED_WITH: 422,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CreateJob"}
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            **_job(
                                "The job: a new one, or the one this Idempotency-Key made "
                                "(the first answer again, with `Idempotent-Replayed: true`). "
                                "Its input files were checked first (when a render service "
                                "answered in time)."
                            ),
                            "headers": {
                                "Location": {
                                    "description": "The job's URL: /api/jobs/{id}.",
                                    "schema": {"type": "string"},
                                },
                                "Idempotent-Replayed": {
                                    "description": "`true` when the Idempotency-Key was seen "
                                    "before: this is its job, nothing new was started.",
                                    "schema": {"type": "string", "enum": ["true"]},
                                },
                            },
                        },
                        "400": _error(
                            "The body is not JSON, or the Idempotency-Key is not 1 to "
                            f"{MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters; `field` "
                            "names it (`body`, `Idempotency-Key`)."
                        ),
                        "413": _error("The body is too large."),
                        "409": _error("This Idempotency-Key was used for a different spec."),
                        "410": _error(
                            "This Idempotency-Key made a job that was deleted: it is never "
                            "rendered again; `field` is `Idempotency-Key`."
                        ),
                        "415": _error("The body is not application/json."),
                        "422": _error(
                            "A field of the spec is outside its documented range (or a string "
                            "is not valid Unicode text, or the output's pixels per second are "
                            "over the service's limit); `field` names it "
                            "(`source.testPattern.width`, `output.fps`)."
                        ),
                        **_API_ERRORS,
                    },
                },
                "get": {
                    "operationId": "listJobs",
                    "summary": "Jobs, newest first.",
                    "security": [{"bearer": []}, {}],
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": JOB_STATUSES},
                            REFUSED_WITH: 422,
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_LIST_LIMIT,
                                "default": DEFAULT_LIST_LIMIT,
                            },
                            REFUSED_WITH: 422,
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "required": False,
                            "description": "The opaque nextCursor of the previous page.",
                            "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "One page of jobs.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/JobList"}
                                }
                            },
                        },
                        "400": _error(
                            "`limit` is not a number, or the cursor was not issued by this "
                            "service; `field` names the parameter."
                        ),
                        "422": _error(
                            "`limit` is outside its range or `status` is not a job status; "
                            "`field` names the parameter."
                        ),
                        **_API_ERRORS,
                    },
                },
            },
            "/api/jobs/{id}": {
                "get": {
                    "operationId": "getJob",
                    "security": [{"bearer": []}, {}],
                    "parameters": [JOB_ID_PARAMETER],
                    "responses": {
                        "200": _job("The job."),
                        "404": _error("No job has this id."),
                        **_API_ERRORS,
                    },
                },
                "delete": {
                    "operationId": "deleteJob",
                    "summary": "Delete a finished job: its record, its history and its file.",
                    "description": (
                        "Only a completed, failed or cancelled job can be deleted; afterwards it "
                        "is 404, and its Idempotency-Key answers 410. The export service's "
                        "`--job-retention` deletes finished jobs the same way after a given age."
                    ),
                    "security": [{"bearer": []}, {}],
                    "parameters": [JOB_ID_PARAMETER],
                    "responses": {
                        "204": {"description": "Deleted."},
                        "404": _error("No job has this id."),
                        "409": _error(
                            "The job is queued or running (cancel it first), or its render is "
                            "still being cleaned up after a cancel (retry shortly)."
                        ),
                        **_API_ERRORS,
                    },
                },
            },
            "/api/jobs/{id}/cancel": {
                "post": {
                    "operationId": "cancelJob",
                    "security": [{"bearer": []}, {}],
                    "parameters": [JOB_ID_PARAMETER],
                    "responses": {
                        "200": _job(
                            "The job, cancelled (also when it was cancelled already: a "
                            "repeated cancel gets the same answer)."
                        ),
                        "404": _error("No job has this id."),
                        "409": _error("The job has already completed or failed."),
                        **_API_ERRORS,
                    },
                }
            },
            "/api/jobs/{id}/events": {
                "get": {
                    "operationId": "watchJob",
                    "summary": "Server-Sent Events: the current state, then each change.",
                    "description": (
                        "Event `progress` for queued/running states and `completed`, `failed` "
                        "or `cancelled` for the terminal one, after which the stream ends. "
                        "`id:` is the job's version and `data:` the Job JSON. `Last-Event-ID` "
                        "(header, or `lastEventId` query) resumes after that version; one "
                        "ahead of the job's version gets the current state first. A "
                        "`: keep-alive` comment is sent at least every 15 s."
                    ),
                    "security": [{"bearer": []}, {}],
                    "parameters": [
                        JOB_ID_PARAMETER,
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": VERSION_PATTERN},
                        },
                        {
                            "name": "lastEventId",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "pattern": VERSION_PATTERN},
                        },
                        ACCESS_TOKEN_PARAMETER,
                    ],
                    "responses": {
                        "200": {
                            "description": "The event stream.",
                            "content": {
                                "text/event-stream": {
                                    "schema": {"$ref": "#/components/schemas/JobEvent"}
                                }
                            },
                        },
                        "204": {
                            "description": "The job finished at or before Last-Event-ID: "
                            "nothing more will come (EventSource stops reconnecting)."
                        },
                        "400": _error("Last-Event-ID is not a version number."),
                        "404": _error("No job has this id."),
                        **_API_ERRORS,
                    },
                }
            },
            "/api/jobs/{id}/history": {
                "get": {
                    "operationId": "jobHistory",
                    "summary": "The job's committed changes, oldest first, one per version.",
                    "description": (
                        "Status changes, each attempt (`begin_attempt`: a lost render submitted "
                        "again), progress (coalesced as the job's is) and the outcome. Kept and "
                        "deleted with the job. Page with `afterVersion`: the previous page's "
                        "`nextAfterVersion`."
                    ),
                    "security": [{"bearer": []}, {}],
                    "parameters": [
                        JOB_ID_PARAMETER,
                        {
                            "name": "afterVersion",
                            "in": "query",
                            "required": False,
                            "description": "Only the entries after this version.",
                            "schema": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": MAX_VERSION,
                                "default": 0,
                            },
                            REFUSED_WITH: 422,
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": limits.MAX_HISTORY_LIMIT,
                                "default": limits.DEFAULT_HISTORY_LIMIT,
                            },
                            REFUSED_WITH: 422,
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "One page of the history.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/JobHistory"}
                                }
                            },
                        },
                        "400": _error(
                            "`afterVersion` or `limit` is not a number; `field` names it."
                        ),
                        "404": _error("No job has this id."),
                        "422": _error(
                            "`afterVersion` or `limit` is outside its range; `field` names it."
                        ),
                        **_API_ERRORS,
                    },
                }
            },
            "/api/jobs/{id}/deliveries": {
                "get": {
                    "operationId": "jobDeliveries",
                    "summary": "The job's webhook deliveries, oldest first.",
                    "description": (
                        "One per event and endpoint: its state (pending, delivered, gave_up), "
                        "attempts, the last answer and the next try."
                    ),
                    "security": [{"bearer": []}, {}],
                    "parameters": [JOB_ID_PARAMETER],
                    "responses": {
                        "200": {
                            "description": "The deliveries.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Deliveries"}
                                }
                            },
                        },
                        "404": _error("No job has this id."),
                        **_API_ERRORS,
                    },
                }
            },
            "/api/events": {
                "get": {
                    "operationId": "watchJobs",
                    "summary": "Server-Sent Events for a whole page: one stream for every job.",
                    "description": (
                        "The view is the newest `limit` jobs (of `status`, when given) plus the "
                        "jobs named in `ids`. Every connection first sends the current state of "
                        "each job of the view, then each change, including a job that newly "
                        "enters the newest `limit` and a job whose status moves it out of the "
                        "filter (its last change still comes). Every change of status arrives; "
                        "intermediate progress may be coalesced. Event `job`, `data:` the Job "
                        "JSON, no `id:`: a reconnect needs no cursor, it starts with the current "
                        "state again. The stream does not end by itself; a `: keep-alive` "
                        "comment is sent at least every 15 s."
                    ),
                    "security": [{"bearer": []}, {}],
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": JOB_STATUSES},
                            REFUSED_WITH: 422,
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_LIST_LIMIT,
                                "default": DEFAULT_LIST_LIMIT,
                            },
                            REFUSED_WITH: 422,
                        },
                        {
                            "name": "ids",
                            "in": "query",
                            "required": False,
                            "description": (
                                f"Up to {MAX_WATCH_IDS} comma-separated job ids to follow as "
                                "well (jobs the page shows beyond the newest `limit`); unknown "
                                "ids are skipped."
                            ),
                            "schema": {"type": "string", "pattern": WATCH_IDS_PATTERN},
                        },
                        ACCESS_TOKEN_PARAMETER,
                    ],
                    "responses": {
                        "200": {
                            "description": "The event stream.",
                            "content": {
                                "text/event-stream": {
                                    "schema": {"$ref": "#/components/schemas/JobListEvent"}
                                }
                            },
                        },
                        "400": _error("`limit` is not a number; `field` names it."),
                        "422": _error(
                            "`limit` is outside its range, `status` is not a job status or "
                            "`ids` is not a list of job ids; `field` names the parameter."
                        ),
                        **_API_ERRORS,
                    },
                }
            },
            "/api/media": {
                "post": {
                    "operationId": "uploadMedia",
                    "summary": "Upload a clip, a soundtrack or an image into the media root.",
                    "description": (
                        "The request body is the file itself, streamed to disk. ffmpeg reads "
                        "its header: a file with neither a video nor an audio stream (or "
                        "that is a playlist of other files) is refused and removed. The "
                        "gateway chooses the stored name; the returned `path` is the input "
                        "path of a transcode (`source.transcode.inputPath`). The size limit is "
                        "the gateway's `--max-upload-bytes` (default "
                        f"{limits.DEFAULT_MAX_UPLOAD_BYTES} bytes), apart from the JSON body "
                        "limit."
                    ),
                    "security": [{"bearer": []}, {}],
                    "parameters": [
                        {
                            "name": "filename",
                            "in": "query",
                            "required": False,
                            "description": (
                                "The client's file name, kept as the upload's `originalName` "
                                "(for display; the stored name is the gateway's, its "
                                "extension the format's when the name's is not one of it)."
                            ),
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "description": (
                            "A video, audio or image file ffmpeg can read; any other bytes "
                            "are refused (422, `field` `body`)."
                        ),
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                            "video/*": {"schema": {"type": "string", "format": "binary"}},
                            "audio/*": {"schema": {"type": "string", "format": "binary"}},
                            "image/*": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "Stored; what ffmpeg read from it.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Upload"}
                                }
                            },
                        },
                        "413": _error("The file is larger than the gateway's upload limit."),
                        "422": _error(
                            "The body is empty or not a media file ffmpeg can read; `field` "
                            "is `body`. Nothing is kept."
                        ),
                        **_API_ERRORS,
                    },
                },
                "get": {
                    "operationId": "listMedia",
                    "summary": "The files in the media root, newest first.",
                    "security": [{"bearer": []}, {}],
                    "responses": {
                        "200": {
                            "description": "At most 1000 files (hidden files left out).",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/MediaList"}
                                }
                            },
                        },
                        **_API_ERRORS,
                    },
                },
            },
            "/api/jobs/{id}/download": {
                "get": {
                    "operationId": "downloadJob",
                    "summary": "The finished video (supports Range).",
                    "security": [{"bearer": []}, {}],
                    "parameters": [
                        JOB_ID_PARAMETER,
                        ACCESS_TOKEN_PARAMETER,
                        {
                            "name": "Range",
                            "in": "header",
                            "required": False,
                            "description": "Byte ranges (RFC 9110): `bytes=FIRST-LAST`, "
                            "`bytes=FIRST-`, `bytes=-SUFFIX`, or several separated by commas. "
                            "Another unit than bytes is ignored (the whole file).",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The whole file.",
                            "content": {
                                media_type: {"schema": {"type": "string", "format": "binary"}}
                                for media_type in limits.CONTAINER_MEDIA_TYPES.values()
                            },
                        },
                        "206": {"description": "The requested byte range."},
                        "400": _error("The Range header cannot be read; `field` is `Range`."),
                        "404": _error("No job has this id."),
                        "409": _error(
                            "The job has no file: it is queued or running (its file exists "
                            "once it has completed), or it failed or was cancelled (it never "
                            "will have one); the message says which."
                        ),
                        "302": {
                            "description": "With `--downloads redirect` and an output in an "
                            "object store: a presigned link to the object (computed for this "
                            "request, valid for `--download-link-seconds`; `Range` works on it).",
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        },
                        "410": _error(
                            "The job completed but its file is gone (for an output in an "
                            "object store: the object is no longer in the store)."
                        ),
                        "416": {
                            **_error("The range starts past the end of the file."),
                            "headers": {
                                "Content-Range": {
                                    "description": "`bytes */SIZE`: the file's size.",
                                    "schema": {"type": "string"},
                                }
                            },
                        },
                        **_API_ERRORS,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "responses": {
                        "200": {
                            "description": "Up, and the export service is serving.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                        "503": {
                            "description": "The export service is not reachable or not serving.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                    },
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readiness",
                    "description": "The gateway can serve: an export service answers and its "
                    "job database is up, and the object store of the media root answers when "
                    "there is one.",
                    "responses": {
                        "200": {
                            "description": "Ready.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                        "503": {
                            "description": "No export service answers, its database is down, "
                            "or the object store of the media root does not answer.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Health"}
                                }
                            },
                        },
                    },
                }
            },
            "/livez": {
                "get": {
                    "operationId": "liveness",
                    "description": "The gateway process answers; no call to any other service.",
                    "responses": {
                        "200": {
                            "description": "The gateway is alive.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "additionalProperties": False,
                                        "properties": {"status": {"const": "ok"}},
                                    }
                                }
                            },
                        },
                    },
                }
            },
        },
    }


OPENAPI_DOCUMENT: dict[str, Any] = _build()
