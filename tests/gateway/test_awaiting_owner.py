"""A job no export replica drives (awaitingOwner, derived by the export service as it read the
job) in the HTTP API, and on the page's event stream: the same version shown again when only
what was derived changed, never an older one, nothing after a terminal frame."""

from __future__ import annotations

import json

from gateway.list_watch import JobFrame, ListSubscription, ListWatch, View, job_frame
from gateway.openapi import COMPONENT_SCHEMAS
from videojob.export.v1 import export_pb2
from videojob.job_json import job_to_json
from videojob.limits import STAGE_WAITING_FOR_OWNER


def video_job(version: int, *, awaiting: bool = False) -> export_pb2.VideoJob:
    job = export_pb2.VideoJob(
        id="j", status=export_pb2.RUNNING, progress=40, stage="Rendering", attempt=1
    )
    job.version = version
    if awaiting:
        job.awaiting_owner = True
        job.stage = STAGE_WAITING_FOR_OWNER
    return job


def shown(frame: JobFrame) -> tuple[int, bool, str]:
    body = json.loads(frame.data.decode().split("data: ", 1)[1])
    return body["version"], body["awaitingOwner"], body["stage"]


def test_the_job_says_nobody_drives_it_and_has_no_eta() -> None:
    job = video_job(7, awaiting=True)
    job.eta_seconds = 0
    body = job_to_json(job)
    assert (body["awaitingOwner"], body["stage"], body["etaSeconds"]) == (
        True,
        STAGE_WAITING_FOR_OWNER,
        None,
    )
    assert job_to_json(video_job(7))["awaitingOwner"] is False
    assert "awaitingOwner" in COMPONENT_SCHEMAS["Job"]["properties"]
    assert STAGE_WAITING_FOR_OWNER in COMPONENT_SCHEMAS["Job"]["properties"]["stage"]["description"]


def test_a_frame_of_the_same_version_replaces_another_only_when_the_derived_state_changed() -> None:
    driven, awaiting = job_frame(video_job(7)), job_frame(video_job(7, awaiting=True))
    assert awaiting.replaces(driven) and driven.replaces(awaiting)
    assert not driven.replaces(driven) and not awaiting.replaces(awaiting)
    assert not job_frame(video_job(6, awaiting=True)).replaces(driven)
    assert job_frame(video_job(8)).replaces(awaiting)


async def test_the_page_stream_shows_the_job_waiting_for_its_replica_and_back() -> None:
    watch = ListWatch(View.of(0, 20, ()))
    subscription = ListSubscription()
    watch.add(subscription)
    taken: list[tuple[int, bool, str]] = []
    for job in (
        video_job(7),
        video_job(7),  # read again, nothing new: not sent
        video_job(7, awaiting=True),
        video_job(6),  # an older version, whatever it shows: never
        video_job(7, awaiting=True),
        video_job(7),
    ):
        watch.publish(job_frame(job))
        frames = await subscription.next(idle_seconds=0.01)
        if isinstance(frames, list):
            taken += [shown(frame) for frame in frames]
    assert taken == [
        (7, False, "Rendering"),
        (7, True, STAGE_WAITING_FOR_OWNER),
        (7, False, "Rendering"),
    ]
