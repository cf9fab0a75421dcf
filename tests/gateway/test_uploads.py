"""``POST /api/media`` and ``GET /api/media``: a real clip is stored, listed and transcoded over
HTTP against the real stack; a file that is not media (422) and one over the upload limit (413)
leave nothing on disk, checked against the gateway alone in-process (uploads need no other
service: the gateway writes them and ffmpeg reads their header)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import Stack, create_job, wait_terminal
from tests.gateway.inprocess import app_client, gateway_settings
from tests.gateway.realtime_stack import MAX_UPLOAD_BYTES, make_clip
from tests.gateway.realtime_stack import realtime_stack as realtime_stack
from tests.support.media import media_duration, media_header


@pytest.fixture
def http(realtime_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=realtime_stack.url, timeout=60) as client:
        yield client


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def gateway(media_root: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway alone, in-process, with the realtime stack's upload limit."""
    settings = gateway_settings(media_root=media_root, max_upload_bytes=MAX_UPLOAD_BYTES)
    async with app_client(settings) as client:
        yield client


def uploads_on_disk(media_root: Path) -> set[str]:
    """Every file in the uploads folder, hidden temporary files included."""
    folder = media_root / "uploads"
    return {path.name for path in folder.iterdir()} if folder.exists() else set()


def test_a_real_clip_is_stored_listed_and_transcoded(
    realtime_stack: Stack, http: httpx.Client, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "my clip.mp4")
    response = http.post(
        "/api/media",
        params={"filename": clip.name},
        content=clip.read_bytes(),
        headers={"Content-Type": "video/mp4"},
    )
    assert response.status_code == 201, response.text
    upload = response.json()
    assert upload["path"].startswith("uploads/") and upload["path"].endswith(".mp4")
    assert "my clip" not in upload["path"]
    assert upload["sizeBytes"] == clip.stat().st_size
    assert (upload["width"], upload["height"]) == (160, 120)
    assert upload["videoCodec"] == "h264" and upload["audioCodec"] == "aac"
    assert upload["durationSeconds"] == pytest.approx(1.0, abs=0.2)
    stored = realtime_stack.media_root / upload["path"]
    assert stored.read_bytes() == clip.read_bytes()
    # No partial file is left; the one hidden file beside it is its record (its original name).
    hidden = [name for name in uploads_on_disk(realtime_stack.media_root) if name.startswith(".")]
    assert not [name for name in hidden if name.endswith(".part")], hidden
    assert upload["originalName"] == "my clip.mp4"

    listing = http.get("/api/media")
    assert listing.status_code == 200
    assert upload["path"] in {entry["path"] for entry in listing.json()["files"]}

    spec = {
        "source": {"transcode": {"inputPath": upload["path"]}},
        "output": {"container": "webm", "width": 96, "height": 72},
    }
    job = wait_terminal(http, create_job(http, spec)["id"])
    assert job["status"] == "completed", job
    download = http.get(f"/api/jobs/{job['id']}/download")
    assert download.status_code == 200
    result = tmp_path / "result.webm"
    result.write_bytes(download.content)
    assert media_duration(result) == pytest.approx(1.0, abs=0.2)
    header = media_header(result)
    assert "Video: vp9" in header and "96x72" in header, header


async def test_a_file_that_is_not_media_is_refused_and_removed(
    media_root: Path, gateway: httpx.AsyncClient
) -> None:
    before = uploads_on_disk(media_root)
    response = await gateway.post(
        "/api/media", params={"filename": "notes.mp4"}, content=b"just some text\n" * 200
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "body"
    assert uploads_on_disk(media_root) == before


async def test_an_empty_upload_is_refused(media_root: Path, gateway: httpx.AsyncClient) -> None:
    before = uploads_on_disk(media_root)
    response = await gateway.post("/api/media", content=b"")
    assert response.status_code == 422, response.text
    assert uploads_on_disk(media_root) == before


async def test_an_upload_over_the_limit_is_413_and_leaves_nothing(
    media_root: Path, gateway: httpx.AsyncClient
) -> None:
    before = uploads_on_disk(media_root)
    too_big = b"\0" * (MAX_UPLOAD_BYTES + 1)
    declared = await gateway.post("/api/media", content=too_big)
    assert declared.status_code == 413, declared.text
    assert str(MAX_UPLOAD_BYTES) in declared.json()["message"]

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit is found while the body streams in.
        for start in range(0, len(too_big), 16 * 1024):
            yield too_big[start : start + 16 * 1024]

    streamed = await gateway.post("/api/media", content=chunks())
    assert streamed.status_code == 413, streamed.text
    assert uploads_on_disk(media_root) == before


async def test_the_json_body_limit_does_not_apply_to_uploads_and_still_applies_to_jobs(
    gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The gateway's JSON limit (64 KiB) is below the upload limit (256 KiB)."""
    clip = make_clip(tmp_path / "longer.mp4", seconds=6.0)
    assert 64 * 1024 < clip.stat().st_size < MAX_UPLOAD_BYTES
    accepted = await gateway.post("/api/media", content=clip.read_bytes())
    assert accepted.status_code == 201, accepted.text
    refused = await gateway.post(
        "/api/jobs", content=b" " * (64 * 1024 + 1), headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 413
