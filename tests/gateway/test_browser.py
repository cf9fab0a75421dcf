"""End to end in a real browser: start a render on the page, watch the bar reach 100 %,
download the file. Debian's chromium, headless; skipped (saying why) where it is missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import Stack, start_gateway, stop, tiny_spec

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, for the page tests of one module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)",
    ),
]


@pytest.mark.parametrize("events", ["stream", "blocked"])
def test_render_on_the_page_reaches_100_and_downloads(
    stack: Stack, tmp_path: Path, events: str
) -> None:
    """With ``blocked`` every event stream fails, so the page must fall back to polling."""
    from playwright.sync_api import Route, expect, sync_playwright

    streams_opened: list[str] = []

    def refuse_stream(route: Route) -> None:
        streams_opened.append(route.request.url)
        route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 375, "height": 800}, accept_downloads=True)
            if events == "blocked":
                page.route("**/api/events*", refuse_stream)
            page.goto(stack.url + "/")
            expect(page.locator("#health")).to_have_text("service up")
            page.fill("input[name=durationSeconds]", "2")
            page.fill("input[name=width]", "160")
            page.fill("input[name=height]", "120")
            page.fill("input[name=fps]", "10")
            page.click("#start-button")
            expect(page.locator("#form-message")).to_have_text("Started.")
            card = page.locator("li.job").first
            job_id = card.get_attribute("data-job-id")
            assert job_id
            card = page.locator(f"#job-{job_id}")
            expect(card.locator(".bar")).to_have_attribute("aria-valuenow", "100", timeout=60_000)
            expect(card.locator(".percent")).to_have_text("100%")
            expect(card.locator(".status")).to_have_text("completed")
            expect(card.locator(".stage")).to_have_text("Complete")
            expect(card.locator(".cancel")).to_be_hidden()
            with page.expect_download() as download_info:
                card.locator(".download").click()
            download = download_info.value
            assert download.suggested_filename == f"{job_id}.mp4"
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            content = saved.read_bytes()
            assert content[4:8] == b"ftyp"
            assert len(content) == (stack.output_dir / f"{job_id}.mp4").stat().st_size
            if events == "blocked":
                assert streams_opened, "the page never tried the event stream"
        finally:
            browser.close()


def test_page_asks_for_the_token_once_and_keeps_it_for_the_tab(stack: Stack) -> None:
    from playwright.sync_api import expect, sync_playwright

    token = "browser-test-token"
    gateway = start_gateway(stack.export.address, "--api-token", token)
    url = f"http://127.0.0.1:{gateway.port}"
    try:
        created = httpx.post(
            f"{url}/api/jobs", json=tiny_spec(), headers={"Authorization": f"Bearer {token}"}
        )
        assert created.status_code == 201, created.text
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{url}/")
                panel = page.locator("#token-panel")
                expect(panel).to_be_visible()
                page.fill("#token-form input[name=token]", token)
                page.click("#token-form button")
                expect(panel).to_be_hidden()
                stored = page.evaluate("sessionStorage.getItem('videojob.apiToken')")
                assert stored == token
                page.reload()
                expect(page.locator(f"#job-{created.json()['id']}")).to_be_visible()
                expect(panel).to_be_hidden()
            finally:
                browser.close()
    finally:
        stop(gateway)
