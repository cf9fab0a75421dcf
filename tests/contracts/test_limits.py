"""videojob.limits is the one list: the enumerations agree with the protos and with the code
that uses them, and the gateway's JSON-Schema check enforces the rules the document states
across fields (codecs per container, crf ranges per codec)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.openapi import COMPONENT_SCHEMAS
from render_service.failures import FailureCode
from videojob import limits
from videojob.errors import InvalidArgument
from videojob.export.v1 import export_pb2
from videojob.json_schema import SchemaChecker
from videojob.render.v1 import failure_pb2

CHECKER = SchemaChecker(COMPONENT_SCHEMAS)


def check_output(output: dict[str, Any]) -> None:
    CHECKER.check(output, COMPONENT_SCHEMAS["OutputSpec"], "output")


def test_failure_codes_are_the_proto_enum_names() -> None:
    names = {value.name for value in failure_pb2.FailureCode.DESCRIPTOR.values}
    names.discard("FAILURE_CODE_UNSPECIFIED")
    assert names == limits.FAILURE_CODES
    assert {code.value for code in FailureCode} <= limits.FAILURE_CODES
    assert limits.RETRYABLE_RENDER_FAILURES <= limits.FAILURE_CODES
    assert limits.is_failure_code(limits.FAILURE_RENDER_LOST)
    assert not limits.is_failure_code("FAILURE_CODE_UNSPECIFIED")


def test_job_statuses_split_into_active_and_terminal() -> None:
    proto_names = [name for name, _ in export_pb2.JobStatus.items()]
    assert proto_names[1:] == list(limits.JOB_STATUSES)
    assert proto_names[0] == "JOB_STATUS_UNSPECIFIED"
    assert not set(limits.ACTIVE_JOB_STATUSES) & set(limits.TERMINAL_JOB_STATUSES)
    assert limits.API_TERMINAL_JOB_STATUSES == ("completed", "failed", "cancelled")


def test_every_container_has_codecs_defaults_and_a_media_type() -> None:
    assert limits.DEFAULT_CONTAINER in limits.CONTAINERS
    for container in limits.CONTAINERS:
        assert limits.DEFAULT_VIDEO_CODEC[container] in limits.VIDEO_CODECS_BY_CONTAINER[container]
        assert limits.DEFAULT_AUDIO_CODEC[container] in limits.AUDIO_CODECS_BY_CONTAINER[container]
        assert limits.CONTAINER_MEDIA_TYPES[container] == f"video/{container}"
    assert set(limits.FASTSTART_CONTAINERS) <= set(limits.CONTAINERS)


def test_running_progress_stays_below_complete() -> None:
    assert limits.MAX_RUNNING_PROGRESS < 100


@pytest.mark.parametrize(
    "output",
    [
        {},
        {"videoCodec": "hevc"},
        {"container": "mp4", "audioCodec": "opus", "faststart": True},
        {"container": "webm", "videoCodec": "av1", "faststart": False},
        {"width": 640, "height": 360},
        {"width": 640},
        {"height": 360},
        {"crf": None},
        {"videoCodec": "h264", "crf": 51},
        {"container": "webm", "videoCodec": "vp9", "crf": 63},
    ],
)
def test_outputs_the_document_allows_pass(output: dict[str, Any]) -> None:
    check_output(output)


@pytest.mark.parametrize(
    ("output", "field"),
    [
        ({"videoCodec": "vp9"}, "output.videoCodec"),
        ({"container": "webm", "videoCodec": "h264"}, "output.videoCodec"),
        ({"container": "webm", "audioCodec": "aac"}, "output.audioCodec"),
        ({"container": "webm", "faststart": True}, "output.faststart"),
        ({"container": "webm", "faststart": 1}, "output.faststart"),
        ({"videoCodec": "h264", "crf": 52}, "output.crf"),
        ({"videoCodec": "hevc", "crf": 60}, "output.crf"),
        ({"container": "webm", "videoCodec": "vp9", "crf": 64}, "output.crf"),
    ],
)
def test_outputs_the_document_forbids_name_the_field(output: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_output(output)
    assert caught.value.field == field
