"""A job whose output is being stored in the object store, on the page in a real chromium: its
card says it is Uploading and how much of the file the store has acknowledged, with a bar of
the stage's own beside the job's 99 %, not a bar stuck at 99 % with nothing moving. A stack whose
outputs go to the session's SeaweedFS (tests/storage/test_s3_output.py's configuration), the
render service reaching it through a proxy the test stalls: the upload is held where it is."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.gateway.conftest import tiny_spec
from tests.gateway.test_browser import CHROMIUM
from tests.gateway.test_browser import browser as browser
from tests.storage.test_s3_output import s3_stack_config
from tests.support.polling import poll_until
from tests.support.seaweedfs import SeaweedFS
from tests.support.tcp_proxy import TcpProxy
from videojob_launcher import Stack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.object_store,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)",
    ),
]

DESKTOP = {"width": 1280, "height": 900}
# Bounds on waiting for what the page shows: test timeouts, not measurements of speed.
SHOWN_MS = 30_000
RENDER_MS = 60_000

T = TypeVar("T")


class ThreadedProxy:
    """A TcpProxy on an event loop of its own thread: Playwright's synchronous API, which the
    module's browser is driven with, cannot run inside the test's event loop."""

    def __init__(self, target_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._thread.start()
        self.proxy: TcpProxy = self._run(TcpProxy("127.0.0.1", target_port).start())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def _call(self, action: Callable[[], None]) -> None:
        async def call() -> None:
            action()

        self._run(call())

    @property
    def address(self) -> str:
        return self.proxy.address

    def stall(self) -> None:
        self._call(self.proxy.stall)

    def resume(self) -> None:
        self._call(self.proxy.resume)

    def close(self) -> None:
        self._run(self.proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture
def stalling_store(seaweedfs: SeaweedFS) -> Iterator[ThreadedProxy]:
    proxy = ThreadedProxy(seaweedfs.s3_port)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def uploading_stack(
    seaweedfs: SeaweedFS, stalling_store: ThreadedProxy, tmp_path: Path
) -> Iterator[Stack]:
    """Outputs in the store; the render service reaches it only through ``stalling_store``."""
    location = seaweedfs.location(f"tests/{secrets.token_hex(6)}/renders")
    environ = seaweedfs.environ()
    render_environ = {**environ, "AWS_ENDPOINT_URL": f"http://{stalling_store.address}"}
    with Stack(s3_stack_config(tmp_path, location, environ, render_environ)) as stack:
        yield stack


def test_a_held_upload_shows_its_own_progress_and_then_completes(
    browser: Any, uploading_stack: Stack, stalling_store: ThreadedProxy
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    try:
        page.goto(uploading_stack.url + "/")
        with httpx.Client(base_url=uploading_stack.url, timeout=30) as http:
            stalling_store.stall()
            created = http.post("/api/jobs", json=tiny_spec(1.0))
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]

            def uploading() -> dict[str, Any] | None:
                job: dict[str, Any] = http.get(f"/api/jobs/{job_id}").json()
                assert job["status"] in ("queued", "running"), job
                return job if job["stage"] == "Uploading" else None

            job = poll_until(uploading, "the job to be Uploading", 60)
            # Nothing acknowledged yet: the stage has no measure in the JSON, which is none of
            # the file stored; the job's own percent is held below 100 meanwhile.
            assert job["stageProgress"] is None, job
            assert 95 <= job["progress"] < 100, job
            card = page.locator(f"#job-{job_id}")
            expect(card.locator(".stage")).to_have_text(
                "Uploading · 0 % of the file stored", timeout=SHOWN_MS
            )
            stage_bar = card.locator(".stage-bar")
            expect(stage_bar).to_be_visible()
            expect(stage_bar).to_have_attribute("aria-valuenow", "0")
            expect(stage_bar).to_have_attribute("aria-label", "Uploading")
            expect(card.locator(".percent")).to_have_text(f"{int(job['progress'])}%")
            expect(card.locator(".status")).to_have_text("running")
            card.locator(".job-title").click()
            expect(page.locator("#detail-stage")).to_have_text(
                f"Uploading · 0 % of the file stored · {int(job['progress'])}%"
            )
            page.keyboard.press("Escape")

            stalling_store.resume()
            expect(card.locator(".status")).to_have_text("completed", timeout=RENDER_MS)
            expect(card.locator(".stage")).to_have_text("Complete")
            expect(card.locator(".bar")).to_have_attribute("aria-valuenow", "100")
            expect(stage_bar).to_be_hidden()
            finished = http.get(f"/api/jobs/{job_id}").json()
            assert finished["status"] == "completed" and finished["outputSha256"], finished
    finally:
        page.close()
