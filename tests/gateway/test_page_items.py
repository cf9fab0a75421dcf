"""What a user sees on the page when looking closer, in a real chromium against a stack of its
own whose renders run at playback speed (realtime_stack: two render slots):

- waiting jobs say their place in line (and when the next should start), and the place moves
  as the line does, although the job's version does not (the page re-reads waiting jobs);
- a width-only transcode is started from the page and its card says the size asked for;
- a one-slide slideshow is a "Slideshow (1 slide)";
- the dialog's cancel asks first (and does not look like its Close);
- a gateway that cannot be reached is said in words, and the banner goes once it is back.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import GATEWAY_TEST_ARGS, Stack, create_job, wait_for, wait_terminal
from tests.gateway.realtime_stack import RENDER_SLOTS, cancel_all, make_clip, start_long_jobs
from tests.gateway.realtime_stack import realtime_stack as realtime_stack
from tests.gateway.test_browser import CHROMIUM
from tests.gateway.test_browser import browser as browser
from tests.support.media import media_header
from tests.support.polling import poll_until
from tests.support.ports import free_port
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob_launcher import ServiceProcess, gateway_args, launch

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)",
    ),
]

DESKTOP = {"width": 1280, "height": 900}
# Bounds on waiting for what the page shows: test timeouts, not measurements of speed. The page
# re-reads waiting jobs every 5 s.
REREAD_MS = 15_000
RENDER_MS = 60_000
UNREACHABLE = "Can't reach the videojob gateway; retrying\u2026"


@pytest.fixture
def http(realtime_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=realtime_stack.url, timeout=60) as client:
        yield client


@pytest.fixture
def page(browser: Any, realtime_stack: Stack) -> Iterator[Any]:
    opened = browser.new_page(viewport=DESKTOP)
    opened.goto(realtime_stack.url + "/")
    yield opened
    opened.close()


def rendering_with_eta(http: httpx.Client, job_id: str) -> Any:
    def seen() -> Any:
        job = http.get(f"/api/jobs/{job_id}").json()
        return job if job["status"] == "running" and job["etaSeconds"] else None

    return poll_until(seen, f"job {job_id} to render with an ETA", 60)


def queued_on_its_render_service(http: httpx.Client, job_id: str) -> int:
    """The job's version once its render service's first word (the render queued) is recorded:
    version 2; nothing is written of it again until it starts."""

    def seen() -> int | None:
        version: int = http.get(f"/api/jobs/{job_id}").json()["version"]
        return version if version >= 2 else None

    return poll_until(seen, f"job {job_id}'s render to be queued on its render service", 60)


def test_waiting_jobs_show_their_place_in_line_as_it_moves(
    page: Any, http: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    busy = start_long_jobs(http, RENDER_SLOTS)
    waiting: list[str] = []
    try:
        for job_id in busy:
            rendering_with_eta(http, job_id)
        waiting = start_long_jobs(http, 2)
        first, second = (page.locator(f"#job-{job_id} .queue") for job_id in waiting)
        # The next one starts when a running render's ETA says; the second has an estimate only
        # when a job completed on this stack before (other tests of the module), so it may not.
        expect(first).to_contain_text("next in line · starts in about", timeout=REREAD_MS)
        expect(second).to_contain_text("2nd in line", timeout=REREAD_MS)
        version = queued_on_its_render_service(http, waiting[1])

        page.locator(f"#job-{waiting[1]} .job-title").click()
        expect(page.locator("#detail-queue")).to_contain_text("2nd in line")
        page.screenshot(path=str(tmp_path / "desktop-waiting-detail.png"))

        # The one ahead cancelled elsewhere: the line moves, the waiting job's record does not.
        http.post(f"/api/jobs/{waiting[0]}/cancel")
        expect(second).to_contain_text("next in line · starts in about", timeout=REREAD_MS)
        expect(page.locator("#detail-queue")).to_contain_text("next in line", timeout=REREAD_MS)
        assert http.get(f"/api/jobs/{waiting[1]}").json()["version"] == version
        for job_id in busy:
            expect(page.locator(f"#job-{job_id} .queue")).to_have_text("")
    finally:
        cancel_all(http, busy + waiting)


def test_a_width_only_transcode_from_the_page(
    page: Any, http: httpx.Client, realtime_stack: Stack, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    make_clip(realtime_stack.media_root / "wide.mp4")
    page.reload()  # the media list is read as the page loads
    page.select_option("#transcode-input", "wide.mp4")
    page.fill("#transcode-form input[name=width]", "96")
    page.click("#transcode-button")
    expect(page.locator("#transcode-message")).to_have_text("Started.")
    job_id = page.locator("li.job").first.get_attribute("data-job-id")
    card = page.locator(f"#job-{job_id}")
    expect(card.locator(".format")).to_contain_text("96 wide, height from source")
    job = wait_terminal(http, job_id or "")
    assert job["status"] == "completed", job
    assert job["spec"]["output"]["width"] == 96 and "height" not in job["spec"]["output"]
    assert "96x72" in media_header(realtime_stack.output_dir / Path(job["outputPath"]).name)


def test_a_one_slide_slideshow_is_one_slide(
    page: Any, http: httpx.Client, realtime_stack: Stack
) -> None:
    from playwright.sync_api import expect

    image = realtime_stack.media_root / "slide.png"
    subprocess.run(
        [
            tool_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", "color=c=navy:s=160x120", "-frames:v", "1", "-y", str(image),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    spec = {"source": {"slideshow": {"slides": [{"imagePath": "slide.png", "durationSeconds": 1}]}}}
    job = create_job(http, spec)
    try:
        expect(page.locator(f"#job-{job['id']} .job-title")).to_have_text("Slideshow (1 slide)")
    finally:
        cancel_all(http, [job["id"]])


def test_the_dialog_asks_before_it_cancels(page: Any, http: httpx.Client, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    [job_id] = start_long_jobs(http, 1)
    try:
        page.locator(f"#job-{job_id} .job-title").click()
        cancel, close = page.locator("#detail-cancel"), page.locator("#detail-close")
        expect(cancel).to_be_visible()
        expect(cancel).not_to_have_text(close.inner_text())
        assert cancel.get_attribute("class") != close.get_attribute("class")

        cancel.click()
        expect(page.locator("#detail-cancel-confirm")).to_be_visible()
        page.screenshot(path=str(tmp_path / "desktop-cancel-confirm.png"))
        assert http.get(f"/api/jobs/{job_id}").json()["status"] in ("queued", "running")
        page.click("#detail-cancel-keep")
        expect(page.locator("#detail-cancel-confirm")).to_be_hidden()
        expect(cancel).to_be_visible()
        assert http.get(f"/api/jobs/{job_id}").json()["status"] in ("queued", "running")

        cancel.click()
        page.click("#detail-cancel-yes")
        expect(page.locator("#detail-status")).to_have_text("cancelled")
        assert wait_for(http, job_id, {"cancelled"})["status"] == "cancelled"
        expect(cancel).to_be_hidden()
        expect(page.locator("#detail-cancel-confirm")).to_be_hidden()
    finally:
        cancel_all(http, [job_id])


def start_gateway_on(port: int, export_addr: str) -> ServiceProcess:
    return launch(
        "gateway", "gateway", gateway_args(f"127.0.0.1:{port}", export_addr, *GATEWAY_TEST_ARGS)
    )


def test_an_unreachable_gateway_is_said_in_words_and_the_banner_goes_when_it_is_back(
    browser: Any, realtime_stack: Stack
) -> None:
    from playwright.sync_api import expect

    port = free_port()
    gateway = start_gateway_on(port, realtime_stack.export_addr)
    page = browser.new_page(viewport=DESKTOP)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#jobs-state")).not_to_have_text("Loading jobs…")
        gateway.stop()
        banner = page.locator("#banner")
        expect(banner).to_have_text(UNREACHABLE, timeout=RENDER_MS)
        expect(banner).not_to_contain_text("Failed to fetch")
        gateway = start_gateway_on(port, realtime_stack.export_addr)
        expect(banner).to_be_hidden(timeout=RENDER_MS)
    finally:
        page.close()
        gateway.stop()
