"""A split job on the page in a real chromium: its card shows one bar made of a segment per part,
each as wide as its share of the frames and filled with the frames that part finished, beside
the job's own bar; once the job ends, the segments go. A stack of two render services (the
parts spread over them), one export service and a gateway, as real processes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.gateway.conftest import GATEWAY_TEST_ARGS
from tests.gateway.test_browser import CHROMIUM
from tests.gateway.test_browser import browser as browser
from tests.support.specs import pattern_spec
from tests.support.throttle import Throttle
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob_launcher import Role, Stack, StackConfig

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)",
    ),
]

# Bounds on waiting for what the page shows: test timeouts, not measurements of speed.
SHOWN_MS = 60_000


@pytest.fixture(scope="module")
def split_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig(
        tmp_path_factory.mktemp("split-stack"),
        render=Role(count=2),
        gateway=Role(args=GATEWAY_TEST_ARGS),
    )
    with Stack(config) as running:
        yield running


def _call(address: str, request: Any, method: str) -> export_pb2.VideoJob:
    """A blocking call: Playwright's synchronous API runs the test outside any event loop's
    reach."""
    with grpc.insecure_channel(address) as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        answer: export_pb2.VideoJob = getattr(stub, method)(request, timeout=10)
        return answer


def create_split_job(stack: Stack, parts: int) -> export_pb2.VideoJob:
    spec = pattern_spec(60.0, width=640, height=480, fps=25.0)
    spec.output.split.parts = parts
    request = export_pb2.CreateExportRequest(spec=spec)
    return _call(stack.export.address, request, "CreateExport")


def cancel(stack: Stack, job_id: str) -> None:
    _call(stack.export.address, export_pb2.CancelExportRequest(id=job_id), "CancelExport")


def test_a_split_jobs_card_shows_a_segment_per_part_filling_with_its_frames(
    split_stack: Stack, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # Both render services' FFmpegs run a tenth of the time: the job is still rendering its
    # parts (the join pending) when the page is looked at and when it is cancelled.
    throttles = contextlib.ExitStack()
    for render in split_stack.renders:
        throttles.enter_context(Throttle.children_of(render.pid, pause=0.225))
    job = create_split_job(split_stack, 3)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(split_stack.url + "/")
        card = page.locator(f"#job-{job.id}")
        segments = card.locator(".parts .part")
        expect(card.locator(".parts")).to_be_visible(timeout=SHOWN_MS)
        expect(segments).to_have_count(3, timeout=SHOWN_MS)
        for position in range(3):
            expect(segments.nth(position)).to_have_attribute(
                "aria-label", f"Part {position + 1}", timeout=SHOWN_MS
            )
        # Each part fills with its own frames while the job's bar moves.
        page.wait_for_function(
            """(id) => [...document.querySelectorAll(`#job-${id} .parts .part`)]
                 .some((segment) => Number(segment.getAttribute('aria-valuenow')) > 0)""",
            arg=job.id,
            timeout=SHOWN_MS,
        )
        fills = segments.locator(".part-fill")
        assert any(
            fills.nth(position).evaluate("(fill) => parseFloat(fill.style.width) > 0")
            for position in range(3)
        )
        grow = [segments.nth(p).evaluate("(s) => s.style.flexGrow") for p in range(3)]
        assert grow == ["500", "500", "500"], grow  # 1500 frames in three equal parts
        # The details name each part's render and where it runs.
        card.locator(".job-title").click()
        expect(page.locator("#detail-parts")).to_contain_text("part 3 ", timeout=SHOWN_MS)
        expect(page.locator("#detail-parts")).to_contain_text("join pending")
        expect(page.locator("#detail-split-reason")).to_be_hidden()
        cancel(split_stack, job.id)
        expect(card.locator(".status")).to_have_text("cancelled", timeout=SHOWN_MS)
        expect(card.locator(".parts")).to_be_hidden(timeout=SHOWN_MS)
        page.close()
    finally:
        throttles.close()
        cancel(split_stack, job.id)
