"""An upload keeps the name it was sent with (a record beside the stored file, for display), is
stored with the extension of what ffmpeg found in it (not the client's), and says whether a
transcode takes it: over HTTP against the gateway in-process, and on the jobs whose input it is,
in every view of them (over an in-process export service, which keeps them queued)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.inprocess import app_client, gateway_settings, inprocess_export, served_gateway
from tests.gateway.realtime_stack import MAX_UPLOAD_BYTES, make_clip
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.sse_client import aframes

pytestmark = pytest.mark.ffmpeg


def make_media(path: Path, *args: str) -> Path:
    subprocess.run(
        [tool_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args, str(path)],
        check=True,
        timeout=60,
    )
    return path


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def gateway(media_root: Path, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process over an in-process export service (no render service)."""
    async with inprocess_export(tmp_path) as export_address:
        settings = gateway_settings(
            export_address, media_root=media_root, max_upload_bytes=MAX_UPLOAD_BYTES
        )
        async with app_client(settings) as client:
            yield client


async def upload(gateway: httpx.AsyncClient, file: Path, filename: str) -> dict[str, Any]:
    content = file.read_bytes()  # noqa: ASYNC240 (a tiny file the test made)
    response = await gateway.post("/api/media", params={"filename": filename}, content=content)
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def files_under(root: Path) -> set[str]:
    """Every file and folder under ``root``, hidden ones included, relative to it."""
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


async def listed(gateway: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await gateway.get("/api/media")
    assert response.status_code == 200, response.text
    return {entry["path"]: entry for entry in response.json()["files"]}


async def test_an_mp4_sent_as_exe_is_stored_as_mp4_and_keeps_its_name(
    gateway: httpx.AsyncClient, media_root: Path, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    stored = await upload(gateway, clip, "a.exe")
    assert stored["path"].startswith("uploads/") and stored["path"].endswith(".mp4")
    assert stored["originalName"] == "a.exe"
    assert stored["transcodable"] is True
    assert (media_root / stored["path"]).read_bytes() == clip.read_bytes()

    files = await listed(gateway)
    # The record is hidden: the listing shows the file alone, with its name.
    assert list(files) == [stored["path"]]
    assert files[stored["path"]]["originalName"] == "a.exe"
    assert files[stored["path"]]["transcodable"] is True


async def test_a_hint_the_format_goes_by_is_kept_and_one_it_does_not_is_replaced(
    gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    kept = await upload(gateway, clip, "Holiday.MOV")
    assert kept["path"].endswith(".mov") and kept["originalName"] == "Holiday.MOV"
    tone = make_media(tmp_path / "tone.wav", "-f", "lavfi", "-i", "sine=duration=0.3")
    replaced = await upload(gateway, tone, "song.mp4")
    assert replaced["path"].endswith(".wav")
    no_hint = await gateway.post("/api/media", content=tone.read_bytes())
    assert no_hint.status_code == 201, no_hint.text
    assert no_hint.json()["path"].endswith(".wav")
    assert no_hint.json()["originalName"] is None


async def test_images_and_audio_are_listed_as_not_transcodable(
    gateway: httpx.AsyncClient, media_root: Path, tmp_path: Path
) -> None:
    still = make_media(
        tmp_path / "still.png",
        *("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=1:duration=1", "-frames:v", "1"),
    )
    tone = make_media(tmp_path / "tone.mp3", "-f", "lavfi", "-i", "sine=duration=0.3")
    clip = make_clip(tmp_path / "clip.mp4")
    image = await upload(gateway, still, "photo.jpg")
    audio = await upload(gateway, tone, "music.mp3")
    video = await upload(gateway, clip, "clip.mp4")
    assert image["path"].endswith(".png") and image["transcodable"] is False
    assert audio["path"].endswith(".mp3") and audio["transcodable"] is False
    # Put into the media root by hand (no record): judged by the extension.
    (media_root / "by-hand.webm").write_bytes(b"")
    (media_root / "cover.jpg").write_bytes(b"")

    files = await listed(gateway)
    transcodable = {path for path, entry in files.items() if entry["transcodable"]}
    assert transcodable == {video["path"], "by-hand.webm"}
    assert files["by-hand.webm"]["originalName"] is None
    assert files[image["path"]]["originalName"] == "photo.jpg"


async def test_the_name_is_shown_cleaned_and_never_used_as_a_path(
    gateway: httpx.AsyncClient, media_root: Path, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    hostile = "../../etc\\sub/holi\u202eday\x07\x00 clip.mp4  "
    stored = await upload(gateway, clip, hostile)
    assert stored["originalName"] == "holiday clip.mp4"
    assert stored["path"].startswith("uploads/") and stored["path"].count("/") == 1
    on_disk = files_under(media_root)
    assert on_disk == {"uploads", stored["path"], f"uploads/.{Path(stored['path']).name}.json"}

    empty = await upload(gateway, clip, "\u202e\x07 ")
    assert empty["originalName"] is None

    # Bytes that are not UTF-8 (a lone surrogate's) cannot make a name that is not text.
    raw = await gateway.post("/api/media?filename=a%ED%A0%80b.mp4", content=clip.read_bytes())
    assert raw.status_code == 201, raw.text
    name = raw.json()["originalName"]
    name.encode("utf-8")  # raises for a surrogate
    assert name.startswith("a") and name.endswith("b.mp4"), name


async def test_a_job_whose_input_is_an_upload_carries_its_original_name(
    gateway: httpx.AsyncClient, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    stored = await upload(gateway, clip, "Sommer 2026.mp4")
    spec = {"source": {"transcode": {"inputPath": stored["path"]}}, "output": {"width": 96}}
    created = await gateway.post("/api/jobs", json=spec)
    assert created.status_code == 201, created.text
    names = {stored["path"]: "Sommer 2026.mp4"}
    assert created.json()["inputNames"] == names

    job_id = created.json()["id"]
    got = await gateway.get(f"/api/jobs/{job_id}")
    assert got.status_code == 200, got.text
    assert got.json()["inputNames"] == names
    page = await gateway.get("/api/jobs")
    assert page.status_code == 200, page.text
    assert [job["inputNames"] for job in page.json()["jobs"] if job["id"] == job_id] == [names]

    pattern = {"source": {"testPattern": {"durationSeconds": 1}}}
    other = await gateway.post("/api/jobs", json=pattern)
    assert other.status_code == 201, other.text
    assert other.json()["inputNames"] == {}


async def first_event_job(http: httpx.AsyncClient, path: str) -> dict[str, Any]:
    """The job of the first event on the stream at ``path`` (the stream is left then)."""
    async with http.stream("GET", path) as response:
        assert response.status_code == 200
        async for frame in aframes(response.aiter_lines()):
            if frame.is_event:
                document: dict[str, Any] = json.loads(frame.text)
                return document
    raise AssertionError(f"{path} ended without an event")


async def test_both_event_streams_carry_the_names_as_a_read_does(
    media_root: Path, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    async with inprocess_export(tmp_path) as export_address:
        settings = gateway_settings(
            export_address, media_root=media_root, max_upload_bytes=MAX_UPLOAD_BYTES
        )
        async with (
            served_gateway(settings) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            stored = await upload(http, clip, "Strand.mp4")
            spec = {"source": {"transcode": {"inputPath": stored["path"]}}}
            created = await http.post("/api/jobs", json=spec)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            names = {stored["path"]: "Strand.mp4"}

            job_stream = await first_event_job(http, f"/api/jobs/{job_id}/events")
            page_stream = await first_event_job(http, f"/api/events?ids={job_id}")
            read = (await http.get(f"/api/jobs/{job_id}")).json()
    assert job_stream["id"] == page_stream["id"] == job_id
    assert job_stream["inputNames"] == page_stream["inputNames"] == read["inputNames"] == names
