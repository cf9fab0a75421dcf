"""The render pool's fields of a job in the HTTP API: the current render service, each attempt,
and a retry with the new attempt's own progress."""

from __future__ import annotations

from datetime import UTC, datetime

from videojob.export.v1 import export_pb2
from videojob.job_json import job_to_json


def test_a_retrying_job_names_its_render_services_and_its_attempt_progress() -> None:
    job = export_pb2.VideoJob(
        id="j",
        status=export_pb2.RUNNING,
        progress=86,
        stage="Rendering",
        attempt=2,
        retrying=True,
        attempt_progress=12,
        eta_seconds=9,
        render_service=export_pb2.RenderService(instance_id="render-b", address="b:50051"),
    )
    first = job.attempts.add(attempt=1, render_id="j", outcome="superseded by attempt 2")
    first.render_service.instance_id = "render-a"
    first.render_service.address = "a:50051"
    first.started_at.FromDatetime(datetime(2026, 1, 1, tzinfo=UTC))
    first.finished_at.FromDatetime(datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    second = job.attempts.add(attempt=2, render_id="j-a2")
    second.render_service.instance_id = "render-b"
    second.render_service.address = "b:50051"
    second.started_at.FromDatetime(datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    body = job_to_json(job)
    assert (body["progress"], body["attemptProgress"], body["retrying"]) == (86, 12, True)
    assert body["etaSeconds"] == 9
    assert body["renderService"] == {"instanceId": "render-b", "address": "b:50051"}
    assert body["attempts"] == [
        {
            "attempt": 1,
            "renderId": "j",
            "renderService": {"instanceId": "render-a", "address": "a:50051"},
            "startedAt": "2026-01-01T00:00:00.000Z",
            "finishedAt": "2026-01-01T00:01:00.000Z",
            "outcome": "superseded by attempt 2",
        },
        {
            "attempt": 2,
            "renderId": "j-a2",
            "renderService": {"instanceId": "render-b", "address": "b:50051"},
            "startedAt": "2026-01-01T00:01:00.000Z",
            "finishedAt": None,
            "outcome": None,
        },
    ]


def test_a_job_not_placed_yet_has_no_render_service() -> None:
    body = job_to_json(export_pb2.VideoJob(id="j", status=export_pb2.QUEUED, attempt=1))
    assert (body["renderService"], body["attempts"], body["retrying"]) == (None, [], False)
