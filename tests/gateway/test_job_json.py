"""The proto <-> JSON translation the gateway does in one place."""

from __future__ import annotations

import datetime

import pytest

from videojob.errors import InvalidArgument
from videojob.export.v1 import export_pb2
from videojob.job_json import http_field, job_to_json, spec_from_json


def test_proto_field_paths_become_the_api_names() -> None:
    assert http_field("spec.output.video_codec") == "output.videoCodec"
    assert http_field("spec.source.slideshow.slides[2].image_path") == (
        "source.slideshow.slides[2].imagePath"
    )
    assert http_field("spec") == "body"
    assert http_field("request_id") == "Idempotency-Key"
    assert http_field("id") == "id"
    assert http_field("page_token") == "cursor"


def test_a_failed_job_names_its_field_in_the_api_words() -> None:
    error = export_pb2.JobError(
        code="INVALID_INPUT",
        message="spec.source.transcode.input_path: has no video stream",
        field="spec.source.transcode.input_path",
    )
    data = job_to_json(export_pb2.VideoJob(id="j2", status=export_pb2.FAILED, error=error))
    assert data["error"] == {
        "code": "INVALID_INPUT",
        "message": "source.transcode.inputPath: has no video stream",
        "field": "source.transcode.inputPath",
    }


def test_job_json_has_the_pinned_shape() -> None:
    job = export_pb2.VideoJob(
        id="j1",
        status=export_pb2.FAILED,
        progress=42.5,
        stage="Rendering",
        attempt=2,
        version=7,
        error=export_pb2.JobError(code="FFMPEG_ERROR", message="ffmpeg exited with code 1"),
    )
    moment = datetime.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=datetime.UTC)
    job.created_at.FromDatetime(moment)
    data = job_to_json(job)
    assert data["status"] == "failed"
    assert data["error"] == {"code": "FFMPEG_ERROR", "message": "ffmpeg exited with code 1"}
    assert data["createdAt"] == "2024-05-06T07:08:09.123Z"
    assert data["startedAt"] is None
    assert data["outputPath"] is None
    assert (data["progress"], data["attempt"], data["version"]) == (42.5, 2, 7)


def test_every_source_kind_parses() -> None:
    spec = spec_from_json(
        {
            "source": {
                "slideshow": {
                    "slides": [{"imagePath": "a.png", "durationSeconds": 1.5}],
                    "audioPath": "music.m4a",
                }
            },
            "output": {"container": "webm", "videoCodec": "vp9", "crf": 30, "faststart": False},
        }
    )
    assert spec.source.slideshow.slides[0].image_path == "a.png"
    assert spec.output.HasField("crf")
    assert spec_from_json({"source": {"transcode": {"inputPath": "in.mov"}}}).source.HasField(
        "transcode"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": {"testPattern": {"durationSeconds": float("nan")}}}, "durationSeconds"),
        ({"source": {"testPattern": {"durationSeconds": True}}}, "durationSeconds"),
        ({"source": {"testPattern": {"durationSeconds": 1, "fps": "30"}}}, "fps"),
        ({"source": {"slideshow": {"slides": []}}}, "source.slideshow.slides"),
        (
            {"source": {"slideshow": {"slides": [{"imagePath": "", "durationSeconds": 1}]}}},
            "source.slideshow.slides[0].imagePath",
        ),
        ({"source": {"testPattern": {"duration_seconds": 1}}}, "duration_seconds"),
        ({"source": {"testPattern": {"durationSeconds": 1}}, "output": {"crf": 64}}, "crf"),
    ],
)
def test_invalid_specs_name_the_field(body: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        spec_from_json(body)
    assert raised.value.field.endswith(field), raised.value.message
