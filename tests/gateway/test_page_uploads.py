"""The page's uploads in a real chromium: the transcode picker lists only what a transcode takes
(videos, not images or audio alone), each upload by the name it was sent with, and a job whose
input is an upload is named by it on its card and in its details (a slideshow's, each of its
inputs). The gateway is served in-process over an in-process export service, which keeps the
jobs queued (no render service): nothing here needs a render."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.inprocess import gateway_settings, inprocess_export, served_gateway
from tests.gateway.realtime_stack import MAX_UPLOAD_BYTES, make_clip
from tests.gateway.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.tool_ffmpeg import tool_ffmpeg

pytestmark = [
    pytest.mark.browser,
    pytest.mark.ffmpeg,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)",
    ),
]


def make_media(path: Path, *args: str) -> Path:
    subprocess.run(
        [tool_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args, str(path)],
        check=True,
        timeout=60,
    )
    return path


def make_tone(path: Path) -> Path:
    return make_media(path, "-f", "lavfi", "-i", "sine=duration=0.3")


@pytest.fixture
async def gateway_url(tmp_path: Path) -> AsyncIterator[str]:
    async with inprocess_export(tmp_path) as export_address:
        settings = gateway_settings(
            export_address, media_root=tmp_path / "media", max_upload_bytes=MAX_UPLOAD_BYTES
        )
        async with served_gateway(settings) as url:
            yield url


@pytest.fixture
async def page(gateway_url: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield await browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            await browser.close()


async def test_the_picker_lists_videos_by_their_names_and_jobs_are_named_by_them(
    gateway_url: str, page: Any, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    clip = make_clip(tmp_path / "clip.mp4")
    tone = make_tone(tmp_path / "tone.wav")
    still = make_media(
        tmp_path / "still.png",
        *("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=1:duration=1", "-frames:v", "1"),
    )
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        video = await http.post(
            "/api/media", params={"filename": "Sommer am See.mp4"}, content=clip.read_bytes()
        )
        assert video.status_code == 201, video.text
        audio = await http.post(
            "/api/media", params={"filename": "song.wav"}, content=tone.read_bytes()
        )
        assert audio.status_code == 201, audio.text
        cover = await http.post(
            "/api/media", params={"filename": "cover.png"}, content=still.read_bytes()
        )
        assert cover.status_code == 201, cover.text
        video_path, audio_path = video.json()["path"], audio.json()["path"]
        cover_path = cover.json()["path"]
        spec = {"source": {"transcode": {"inputPath": video_path}}, "output": {"width": 96}}
        created = await http.post("/api/jobs", json=spec)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        slides = [{"imagePath": cover_path, "durationSeconds": 1}]
        show = {"source": {"slideshow": {"slides": slides, "audioPath": audio_path}}}
        created_show = await http.post("/api/jobs", json=show)
        assert created_show.status_code == 201, created_show.text
        show_id = created_show.json()["id"]

    await page.goto(gateway_url + "/")
    options = page.locator("#transcode-input option")
    await expect(options).to_have_count(1)
    await expect(options.first).to_have_attribute("value", video_path)
    await expect(options.first).to_contain_text("Sommer am See.mp4")
    card = page.locator(f"#job-{job_id}")
    await expect(card.locator(".job-title")).to_have_text("Transcode Sommer am See.mp4")

    # Audio uploaded through the page: stored, said to be no video, not offered to transcode.
    await page.set_input_files("#upload-file", str(tone))
    await page.click("#upload-button")
    message = page.locator("#upload-message")
    await expect(message).to_contain_text("Uploaded tone.wav")
    await expect(message).to_contain_text("not a video")
    await expect(options).to_have_count(1)
    await expect(page.locator("#transcode-input")).to_have_value(video_path)

    await card.locator(".job-title").click()
    await expect(page.locator("#detail-title")).to_have_text("Transcode Sommer am See.mp4")
    await expect(page.locator("#detail-input")).to_have_text(f"Sommer am See.mp4 ({video_path})")
    await expect(page.locator("#detail-input")).to_be_visible()
    await page.click("#detail-close")

    # A slideshow's inputs, each by its name: the slide (an upload) and the soundtrack.
    await page.locator(f"#job-{show_id} .job-title").click()
    await expect(page.locator("#detail-input")).to_have_text(
        f"cover.png ({cover_path}), song.wav ({audio_path})"
    )
