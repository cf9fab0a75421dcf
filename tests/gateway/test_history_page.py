"""The detail view's history in a real chromium against the real stack: a completed job's
timeline shows its creation, one folded line for its run of progress updates, and its completion,
as GET /api/jobs/{id}/history records them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.gateway.conftest import Stack, create_job, tiny_spec, wait_terminal
from tests.gateway.realtime_stack import realtime_stack as realtime_stack
from tests.gateway.test_page import DESKTOP, PHONE, open_page, pytestmark
from tests.gateway.test_page import browser as browser
from tests.gateway.test_page import http as http

__all__ = ["pytestmark"]

# Seconds of video rendered at playback speed: long enough for several progress updates.
PLAYBACK_SECONDS = 3.0


def test_a_completed_jobs_detail_shows_its_history_as_a_timeline(
    browser: Any, realtime_stack: Stack, http: httpx.Client, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    job = wait_terminal(http, create_job(http, tiny_spec(PLAYBACK_SECONDS))["id"])
    assert job["status"] == "completed", job
    response = http.get(f"/api/jobs/{job['id']}/history")
    assert response.status_code == 200, response.text
    entries = response.json()["entries"]
    running = [e for e in entries if e["change"] == "progress" and e["status"] == "running"]
    assert len(running) >= 2, entries

    page, watch = open_page(browser, realtime_stack, DESKTOP)
    try:
        page.locator(f"#job-{job['id']} .job-title").click()
        lines = page.locator("#detail-history-list li")
        expect(page.locator("#detail-history")).to_be_visible()
        expect(lines.first).to_have_attribute("data-kind", "create")
        expect(lines.first).to_contain_text("created · queued")
        expect(lines.last).to_have_attribute("data-kind", "complete")
        expect(lines.last).to_contain_text("completed · 100 %")
        started = page.locator("#detail-history-list li[data-kind=running]")
        expect(started).to_have_count(1)
        expect(started).to_contain_text("running · attempt 1")
        folded = page.locator("#detail-history-list li[data-kind=progress]")
        expect(folded).to_have_count(1)
        first, last = running[0]["progress"], running[-1]["progress"]
        expect(folded).to_contain_text(
            re.compile(
                rf"progress {int(first)} % → {int(last)} % \({len(running)} updates: [A-Za-z, ]+\)"
            )
        )
        # One line per change of status or outcome, not one per stored version.
        assert lines.count() < len(entries)
        page.screenshot(path=str(tmp_path / "desktop-history.png"))
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(tmp_path / "phone-history.png"))
        assert watch.failed == []
        assert any(f"/api/jobs/{job['id']}/history" in url for url in watch.urls)
    finally:
        page.close()
