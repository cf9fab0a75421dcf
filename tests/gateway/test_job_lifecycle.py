"""The job lifecycle over HTTP against a real stack: delete (record, history, file) and the
tombstone of its Idempotency-Key, idempotent cancel and create, Location and Retry-After, inputs
checked at create time, failures in ffmpeg's words with its log lines, output settings that mean
what they say, and a resume from beyond the end of a job."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import (
    GATEWAY_TEST_ARGS,
    LONG_SPEC,
    create_job,
    tiny_spec,
    wait_for,
    wait_terminal,
)
from tests.gateway.sse_client import events
from tests.support.media import make_clip, video_size
from tests.support.polling import poll_until
from videojob_launcher import Role, Stack, StackConfig


@pytest.fixture(scope="module")
def media(stack: Stack) -> Path:
    """The stack's media root, with a tiny clip in it."""
    make_clip(stack.media_root / "lifecycle" / "clip.mp4")
    return stack.media_root


def transcode(input_path: str, **output: Any) -> dict[str, Any]:
    return {"source": {"transcode": {"inputPath": input_path}}, "output": output}


def slideshow(*images: str, **extra: str) -> dict[str, Any]:
    slides = [{"imagePath": image, "durationSeconds": 0.5} for image in images]
    return {"source": {"slideshow": {"slides": slides, **extra}}, "output": {}}


# --- Delete ----------------------------------------------------------------------------------- --


def test_delete_removes_the_record_its_history_and_its_file(client: httpx.Client) -> None:
    key = f"delete-{uuid.uuid4().hex}"
    job = create_job(client, tiny_spec(), **{"Idempotency-Key": key})
    done = wait_terminal(client, job["id"])
    assert done["status"] == "completed", done
    output = Path(done["outputPath"])
    assert output.is_file()

    deleted = client.delete(f"/api/jobs/{job['id']}")
    assert deleted.status_code == 204, deleted.text
    assert not output.exists()
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert client.get(f"/api/jobs/{job['id']}/history").status_code == 404
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 404

    replayed = client.post("/api/jobs", json=tiny_spec(), headers={"Idempotency-Key": key})
    assert replayed.status_code == 410, replayed.text
    assert replayed.json()["field"] == "Idempotency-Key"
    listed = client.get("/api/jobs", params={"limit": 100}).json()["jobs"]
    assert job["id"] not in {listed_job["id"] for listed_job in listed}


def test_an_active_job_cannot_be_deleted_until_cancelled(client: httpx.Client) -> None:
    job = create_job(client, LONG_SPEC)
    wait_for(client, job["id"], {"running"})
    refused = client.delete(f"/api/jobs/{job['id']}")
    assert refused.status_code == 409, refused.text
    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 200

    # Once the render's clean-up is done (at once, normally) the cancelled job can go.
    def deleted() -> bool:
        response = client.delete(f"/api/jobs/{job['id']}")
        assert response.status_code in (204, 409), response.text
        return response.status_code == 204

    poll_until(deleted, "the cancelled job to be deletable")
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404


# --- Cancel and create, idempotently ----------------------------------------------------------- -


def test_cancelling_twice_returns_the_cancelled_job_both_times(client: httpx.Client) -> None:
    job = create_job(client, LONG_SPEC)
    first = client.post(f"/api/jobs/{job['id']}/cancel")
    second = client.post(f"/api/jobs/{job['id']}/cancel")
    assert first.status_code == second.status_code == 200, second.text
    assert first.json()["status"] == second.json()["status"] == "cancelled"
    assert second.json()["version"] == first.json()["version"]


def test_cancelling_a_completed_job_stays_409(
    client: httpx.Client, completed_job: dict[str, Any]
) -> None:
    refused = client.post(f"/api/jobs/{completed_job['id']}/cancel")
    assert refused.status_code == 409, refused.text


def test_create_answers_201_with_location_and_a_replay_says_so(client: httpx.Client) -> None:
    key = f"replay-{uuid.uuid4().hex}"
    first = client.post("/api/jobs", json=tiny_spec(), headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    assert first.headers["Location"] == f"/api/jobs/{first.json()['id']}"
    assert "Idempotent-Replayed" not in first.headers
    assert client.get(first.headers["Location"]).json()["id"] == first.json()["id"]

    again = client.post("/api/jobs", json=tiny_spec(), headers={"Idempotency-Key": key})
    assert again.status_code == first.status_code
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert again.json()["id"] == first.json()["id"]
    wait_terminal(client, first.json()["id"])


async def test_an_unreachable_export_service_is_503_with_retry_after(
    gateway_alone: httpx.AsyncClient,
) -> None:
    response = await gateway_alone.post("/api/jobs", json=tiny_spec())
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0


@pytest.fixture(scope="module")
def retention_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose export service deletes finished jobs one second after they finish and
    accepts one active job at a time."""
    config = StackConfig(
        tmp_path_factory.mktemp("retention"),
        export=Role(args=("--job-retention", "1", "--max-active-jobs", "1")),
        gateway=Role(args=GATEWAY_TEST_ARGS),
    )
    with Stack(config) as running:
        yield running


def test_retention_deletes_old_finished_jobs_and_keeps_the_others(
    retention_stack: Stack,
) -> None:
    with httpx.Client(base_url=retention_stack.url, timeout=30) as http:
        old = create_job(http, tiny_spec(), **{"Idempotency-Key": f"old-{uuid.uuid4().hex}"})
        finished = wait_terminal(http, old["id"])
        assert finished["status"] == "completed", finished
        output = Path(finished["outputPath"])
        active = create_job(http, LONG_SPEC)

        # Too many active jobs: 429 with Retry-After.
        busy = http.post("/api/jobs", json=tiny_spec())
        assert busy.status_code == 429, busy.text
        assert int(busy.headers["Retry-After"]) > 0

        # The sweep deletes the record, then the file: the job is swept once both are gone.
        poll_until(
            lambda: http.get(f"/api/jobs/{old['id']}").status_code == 404 and not output.exists(),
            "the finished job and its file to be swept",
        )
        kept = http.get(f"/api/jobs/{active['id']}")
        assert kept.status_code == 200 and kept.json()["status"] in ("queued", "running")
        assert http.post(f"/api/jobs/{active['id']}/cancel").status_code == 200


# --- Inputs checked at create time ------------------------------------------------------------ --


def test_a_missing_input_is_refused_at_create_naming_the_field(
    client: httpx.Client, media: Path
) -> None:
    response = client.post("/api/jobs", json=transcode("lifecycle/missing.mp4"))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "source.transcode.inputPath"
    slides = client.post("/api/jobs", json=slideshow("lifecycle/clip.mp4", "lifecycle/no.png"))
    assert slides.status_code == 422, slides.text
    assert slides.json()["field"] == "source.slideshow.slides[1].imagePath"


def test_a_symlink_out_of_the_media_root_is_refused_at_create(
    client: httpx.Client, media: Path, tmp_path: Path
) -> None:
    outside = make_clip(tmp_path / "outside.mp4")
    link = media / "lifecycle" / f"escape-{uuid.uuid4().hex}.mp4"
    link.symlink_to(outside)
    response = client.post("/api/jobs", json=transcode(f"lifecycle/{link.name}"))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "source.transcode.inputPath"
    assert "outside the media root" in body["message"]


def test_an_input_ffmpeg_cannot_read_is_refused_at_create(
    client: httpx.Client, media: Path
) -> None:
    (media / "lifecycle" / "notes.mp4").write_text("not a video\n")
    response = client.post("/api/jobs", json=transcode("lifecycle/notes.mp4"))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "source.transcode.inputPath"


# --- Failures in ffmpeg's words --------------------------------------------------------------- --


def assert_failed_in_ffmpegs_words(job: dict[str, Any]) -> None:
    assert job["status"] == "failed", job
    error = job["error"]
    assert error["code"] == "FFMPEG_ERROR", error
    assert error["message"] != "ffmpeg exited with code 1"
    reason = error["message"].split(": ", 1)[1]
    assert reason.strip(), error
    lines = error["logLines"]
    assert 0 < len(lines) <= 20 and len("\n".join(lines).encode()) <= 4096, lines


@pytest.mark.ffmpeg
def test_a_corrupt_input_fails_with_ffmpegs_reason_and_log_lines(
    client: httpx.Client, media: Path
) -> None:
    # The header (moov first) survives the cut, so the input check passes; the frames do not.
    whole = (media / "lifecycle" / "clip.mp4").read_bytes()
    (media / "lifecycle" / "cut.mp4").write_bytes(whole[:3000])
    job = create_job(client, transcode("lifecycle/cut.mp4", preset="ultrafast"))
    failed = wait_terminal(client, job["id"])
    assert_failed_in_ffmpegs_words(failed)
    assert "Invalid data found" in failed["error"]["message"]


@pytest.mark.ffmpeg
def test_a_video_given_as_a_slide_fails_with_ffmpegs_reason(
    client: httpx.Client, media: Path
) -> None:
    job = create_job(client, slideshow("lifecycle/clip.mp4"))
    failed = wait_terminal(client, job["id"])
    assert_failed_in_ffmpegs_words(failed)
    detail = client.get(f"/api/jobs/{job['id']}").json()
    assert detail["error"] == failed["error"]


# --- Output settings -------------------------------------------------------------------------- --


def test_crf_beyond_the_codecs_range_is_422_naming_the_field(client: httpx.Client) -> None:
    for output in ({"videoCodec": "h264", "crf": 60}, {"crf": 52}):
        response = client.post("/api/jobs", json=tiny_spec(**output))
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "output.crf"
    unset = client.post("/api/jobs", json=tiny_spec(crf=None))
    assert unset.status_code == 201, unset.text
    assert "crf" not in unset.json()["spec"].get("output", {})
    wait_terminal(client, unset.json()["id"])


def test_width_alone_scales_keeping_the_aspect_ratio(client: httpx.Client, media: Path) -> None:
    job = create_job(client, transcode("lifecycle/clip.mp4", width=320, preset="ultrafast"))
    done = wait_terminal(client, job["id"])
    assert done["status"] == "completed", done
    assert video_size(Path(done["outputPath"])) == (320, 240)


# --- Resume beyond the end -------------------------------------------------------------------- --


def test_a_last_event_id_ahead_of_the_job_gets_the_current_state(
    client: httpx.Client, completed_job: dict[str, Any]
) -> None:
    ahead = str(completed_job["version"] + 5)
    url = f"/api/jobs/{completed_job['id']}/events"
    with client.stream("GET", url, headers={"Last-Event-ID": ahead}) as response:
        assert response.status_code == 200
        received = list(events(response))
    assert [frame.event for frame in received] == ["completed"]
    assert received[0].id == str(completed_job["version"])
    assert json.loads("\n".join(received[0].data))["status"] == "completed"
