"""The page's page sizes come from the gateway, which writes them into the page it serves
(gateway.app.PAGE_SIZES), not from numbers kept in static/app.js: a page of the list is the
API's default list limit, a page of a job's history the most one request may ask for."""

from __future__ import annotations

import re

import httpx

from gateway.app import PAGE_SIZES, STATIC_DIR, create_app
from gateway.settings import Settings
from videojob import limits


async def test_the_served_page_carries_the_page_sizes() -> None:
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    html = re.search(r"<html\b[^>]*>", page.text)
    assert html is not None
    assert f'data-list-limit="{limits.DEFAULT_LIST_LIMIT}"' in html.group()
    assert f'data-history-limit="{limits.MAX_HISTORY_LIMIT}"' in html.group()
    assert f'data-queue-limit="{limits.MAX_LIST_LIMIT}"' in html.group()
    assert "{{" not in page.text


def test_every_size_has_its_place_in_the_page_and_the_script_keeps_none() -> None:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for name in PAGE_SIZES:
        assert "{{" + name + "}}" in page, name
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    sizes = re.findall(
        r"^const (LIST_LIMIT|HISTORY_PAGE|QUEUE_LIMIT) = (.*);$", script, re.MULTILINE
    )
    assert sorted(name for name, _ in sizes) == ["HISTORY_PAGE", "LIST_LIMIT", "QUEUE_LIMIT"]
    for _name, value in sizes:
        assert "dataset" in value and not re.search(r"\d", value), value
