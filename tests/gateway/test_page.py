"""The page in a real chromium against the real stack: many active jobs over one event stream,
uploads and transcodes, paging, the detail view, the rough edges, /docs, and screenshots at phone
and desktop width (saved in the test's tmp dir). Renders run at playback speed (realtime_stack),
so the active jobs cost next to no CPU; each test cancels what it started."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import Stack, create_job, wait_for, wait_terminal
from tests.gateway.realtime_stack import RENDER_SLOTS, cancel_all, make_clip, start_long_jobs
from tests.gateway.realtime_stack import realtime_stack as realtime_stack
from tests.gateway.test_browser import CHROMIUM
from tests.gateway.test_browser import browser as browser
from tests.support.media import media_duration, media_header

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)",
    ),
]

# Bounds on waiting for what the page shows: test timeouts, not measurements of speed.
ANSWER_MS = 1000
RENDER_MS = 60_000
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 800}
TIMES = "\u00d7"  # the multiplication sign the page writes sizes with


@pytest.fixture
def http(realtime_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=realtime_stack.url, timeout=60) as client:
        yield client


class PageWatch:
    """What the page asked the gateway for, and every answer that was an error."""

    def __init__(self, page: Any) -> None:
        self.event_streams: list[str] = []
        self.per_job_streams: list[str] = []
        self.failed: list[str] = []
        self.urls: list[str] = []
        page.on("request", self._request)
        page.on("response", self._response)

    def _request(self, request: Any) -> None:
        self.urls.append(request.url)
        if "/api/events" in request.url:
            self.event_streams.append(request.url)
        if request.url.split("?")[0].endswith("/events") and "/api/jobs/" in request.url:
            self.per_job_streams.append(request.url)

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.url}")


def open_page(browser: Any, stack: Stack, viewport: dict[str, int]) -> tuple[Any, PageWatch]:
    page = browser.new_page(viewport=viewport, accept_downloads=True)
    watch = PageWatch(page)
    page.goto(stack.url + "/")
    return page, watch


def test_eight_active_jobs_and_start_cancel_refresh_still_answer(
    browser: Any, realtime_stack: Stack, http: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    job_ids = start_long_jobs(http, 8)
    page, watch = open_page(browser, realtime_stack, DESKTOP)
    try:
        for job_id in job_ids:
            expect(page.locator(f"#job-{job_id}")).to_be_visible()
        active = page.locator("li.job[data-status=queued], li.job[data-status=running]")
        expect(active).to_have_count(8, timeout=10_000)

        # Start: a ninth long job.
        page.fill("input[name=durationSeconds]", "600")
        page.fill("input[name=width]", "160")
        page.fill("input[name=height]", "120")
        page.fill("input[name=fps]", "5")
        page.click("#start-button")
        expect(page.locator("#form-message")).to_have_text("Started.", timeout=ANSWER_MS)
        expect(active).to_have_count(9, timeout=ANSWER_MS)
        job_ids.append(page.locator("li.job").first.get_attribute("data-job-id") or "")

        # Cancel on the page.
        card = page.locator(f"#job-{job_ids[0]}")
        card.locator(".cancel").click()
        expect(card.locator(".status")).to_have_text("cancelled", timeout=ANSWER_MS)

        # A cancellation by someone else arrives over the page's stream.
        http.post(f"/api/jobs/{job_ids[1]}/cancel")
        other = page.locator(f"#job-{job_ids[1]}")
        expect(other.locator(".status")).to_have_text("cancelled", timeout=5_000)

        # Refresh: the first page is fetched again, and the list is whole afterwards.
        with page.expect_response(
            lambda response: "/api/jobs?" in response.url, timeout=ANSWER_MS
        ) as refreshed:
            page.click("#refresh-button")
        assert refreshed.value.status == 200
        expect(active).to_have_count(7, timeout=ANSWER_MS)

        # Bars move: a running job's card follows its progress.
        running = page.locator("li.job[data-status=running] .stage").first
        expect(running).not_to_have_text("Queued", timeout=10_000)

        assert len(watch.event_streams) == 1, watch.event_streams
        assert watch.per_job_streams == []
        assert watch.failed == []
        page.screenshot(path=str(tmp_path / "desktop-active.png"), full_page=False)
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(tmp_path / "phone-active.png"), full_page=True)
        print(f"screenshots in {tmp_path}")
    finally:
        page.close()
        cancel_all(http, job_ids)


def test_upload_transcode_and_download_through_the_page(
    browser: Any, realtime_stack: Stack, http: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    clip = make_clip(tmp_path / "holiday.mp4")
    page, watch = open_page(browser, realtime_stack, PHONE)
    try:
        page.set_input_files("#upload-file", str(clip))
        page.click("#upload-button")
        expect(page.locator("#upload-message")).to_contain_text("Uploaded holiday.mp4")
        expect(page.locator("#upload-message")).to_contain_text(f"160{TIMES}120")
        # The page says the upload is done, then lists the media again and selects it.
        expect(page.locator("#transcode-input")).to_have_value(re.compile(r"^uploads/.+\.mp4$"))
        page.select_option("#transcode-container", "webm")
        expect(page.locator("#transcode-codec")).to_have_value("vp9")
        page.fill("#transcode-form input[name=width]", "96")
        page.fill("#transcode-form input[name=height]", "72")
        page.click("#transcode-button")
        expect(page.locator("#transcode-message")).to_have_text("Started.")
        card = page.locator("li.job").first
        job_id = card.get_attribute("data-job-id")
        card = page.locator(f"#job-{job_id}")
        # Named by the upload's original name, not the name the gateway stored it under.
        expect(card.locator(".job-title")).to_have_text("Transcode holiday.mp4")
        expect(card.locator(".format")).to_have_text(f"WEBM · VP9 · 96{TIMES}72")
        expect(card.locator(".status")).to_have_text("completed", timeout=RENDER_MS)
        with page.expect_download() as download_info:
            card.locator(".download").click()
        saved = tmp_path / download_info.value.suggested_filename
        download_info.value.save_as(saved)
        assert saved.name == f"{job_id}.webm"
        assert media_duration(saved) == pytest.approx(1.0, abs=0.2)
        assert "Video: vp9" in media_header(saved)

        card.locator(".job-title").click()
        detail = page.locator("#job-detail")
        expect(detail).to_be_visible()
        expect(page.locator("#detail-id")).to_have_text(job_id or "")
        expect(page.locator("#detail-status")).to_have_text("completed")
        expect(page.locator("#detail-attempt")).to_have_text("1")
        expect(page.locator("#detail-output")).to_contain_text(f"WEBM · VP9 · 96{TIMES}72")
        expect(page.locator("#detail-finished")).not_to_have_text("not yet")
        expect(page.locator("#detail-download")).to_be_visible()
        page.screenshot(path=str(tmp_path / "phone-detail.png"))
        page.click("#detail-close")
        expect(detail).to_be_hidden()
        assert watch.failed == []
    finally:
        page.close()


def test_a_failed_jobs_detail_shows_its_error(
    browser: Any, realtime_stack: Stack, http: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # The clip is whole at create (the create-time input check passes) and broken before its
    # render starts: both render slots are busy until it is broken, so the render's own check
    # of its input fails the job.
    clip = realtime_stack.media_root / "broken.mp4"
    make_clip(clip)
    busy = start_long_jobs(http, RENDER_SLOTS)
    for job_id in busy:
        wait_for(http, job_id, {"running"})
    spec = {"source": {"transcode": {"inputPath": "broken.mp4"}}}
    job_id = create_job(http, spec)["id"]
    clip.write_bytes(clip.read_bytes()[:1500])
    cancel_all(http, busy)
    failed = wait_terminal(http, job_id)
    assert failed["status"] == "failed", failed
    page, _ = open_page(browser, realtime_stack, DESKTOP)
    try:
        page.locator(f"#job-{failed['id']} .job-title").click()
        expect(page.locator("#detail-error")).to_be_visible()
        expect(page.locator("#detail-error-code")).to_have_text(failed["error"]["code"])
        expect(page.locator("#detail-error-field")).to_have_text("in source.transcode.inputPath")
        first_line = failed["error"]["message"].splitlines()[0]
        expect(page.locator("#detail-error-message")).to_have_text(first_line)
        expect(page.locator("#detail-cancel")).to_be_hidden()
        page.screenshot(path=str(tmp_path / "desktop-failed-detail.png"))
    finally:
        page.close()


def test_paging_past_the_first_20_and_filtering(
    browser: Any, realtime_stack: Stack, http: httpx.Client
) -> None:
    from playwright.sync_api import expect

    # Jobs cancelled while (nearly all) queued behind the render slots: many jobs, next to no
    # render work.
    created = start_long_jobs(http, 23)
    cancel_all(http, created)
    for job_id in created:
        wait_terminal(http, job_id)
    total = len(http.get("/api/jobs", params={"limit": 100}).json()["jobs"])
    page, watch = open_page(browser, realtime_stack, DESKTOP)
    try:
        cards = page.locator("li.job")
        expect(cards).to_have_count(20)
        more = page.locator("#load-more")
        expect(more).to_be_visible()
        more.click()
        expect(cards).to_have_count(min(total, 40))
        for job_id in created:
            expect(page.locator(f"#job-{job_id}")).to_be_attached()

        page.select_option("#status-filter", "cancelled")
        cancelled_cards = page.locator("li.job[data-status=cancelled]")
        expect(cancelled_cards).to_have_count(20)
        expect(cards).to_have_count(20)
        page.select_option("#status-filter", "queued")
        expect(page.locator("#jobs-state")).to_have_text("No queued jobs.")
        expect(cards).to_have_count(0)
        assert watch.failed == []
    finally:
        page.close()


def test_rough_edges_banner_clears_no_false_empty_and_a_favicon(
    browser: Any, realtime_stack: Stack, http: httpx.Client
) -> None:
    from playwright.sync_api import Route, expect

    page = browser.new_page(viewport=DESKTOP)
    watch = PageWatch(page)
    refused: list[str] = []

    def refuse(route: Route) -> None:
        refused.append(route.request.url)
        route.fulfill(
            status=503,
            content_type="application/json",
            body='{"code":"unavailable","message":"the export service is unavailable"}',
        )

    # A job of its own, so that the list has one to show once it loads, whichever tests ran on
    # this stack before (under xdist, maybe none).
    wait_terminal(http, create_job(http)["id"])
    try:
        page.route("**/api/jobs?*", refuse)
        page.goto(realtime_stack.url + "/")
        expect(page.locator("#banner")).to_contain_text("Could not load jobs")
        state = page.locator("#jobs-state")
        expect(state).to_have_text("The jobs could not be loaded.")
        expect(state).not_to_have_text("No jobs yet.")
        assert refused
        page.unroute("**/api/jobs?*")
        page.click("#refresh-button")
        expect(page.locator("#banner")).to_be_hidden()
        expect(page.locator("li.job").first).to_be_visible()
        expect(state).to_be_hidden()
        favicon = http.get("/favicon.ico")
        assert favicon.status_code == 200
        assert favicon.headers["content-type"].startswith("image/svg+xml")
        assert [url for url in watch.failed if "/api/jobs?" not in url] == []
    finally:
        page.close()


def test_docs_render_the_openapi_document_from_the_gateway_alone(
    browser: Any, realtime_stack: Stack, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    watch = PageWatch(page)
    try:
        page.goto(realtime_stack.url + "/docs")
        for operation in ("watchJobs", "uploadMedia", "listMedia", "createJob", "watchJob"):
            expect(page.locator(f"details#{operation}")).to_be_attached()
        page.locator("details#uploadMedia summary").click()
        expect(page.locator("details#uploadMedia")).to_contain_text("413")
        expect(page.locator("#schema-RenderSpec")).to_be_attached()
        page.screenshot(path=str(tmp_path / "docs.png"))
        assert all(url.startswith(realtime_stack.url) for url in watch.urls), watch.urls
        assert watch.failed == []
    finally:
        page.close()
