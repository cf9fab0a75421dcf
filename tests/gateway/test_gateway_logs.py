"""The gateway process's JSON log (``--log-format json``): uvicorn's records carry no
``color_message`` (its message again with ANSI escapes), and the access log (``--access-log``,
off by default) writes one record per request in the documented form."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from tests.gateway.conftest import start_gateway, stop
from tests.gateway.inprocess import NOWHERE
from tests.support.polling import poll_until

# docs/operations.md, "Logs": CLIENT - "METHOD PATH?QUERY HTTP/VERSION" STATUS.
ACCESS_LINE = re.compile(r'^127\.0\.0\.1:\d+ - "GET /livez\?probe=1 HTTP/1\.1" 200$')


def json_records(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_json_log_has_no_terminal_colours_and_documented_access_records() -> None:
    gateway = start_gateway(NOWHERE, "--log-format", "json", "--access-log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", timeout=30) as http:
            assert http.get("/livez", params={"probe": "1"}).status_code == 200

        def access_record() -> dict[str, Any] | None:
            access = [
                record
                for record in json_records(gateway.output)
                if record["logger"] == "uvicorn.access"
            ]
            return access[0] if access else None

        record = poll_until(access_record, "the access log record of GET /livez")
    finally:
        stop(gateway)
    assert ACCESS_LINE.match(record["message"]), record
    assert {"time", "level", "logger", "message"} <= record.keys()
    records = json_records(gateway.output)
    # uvicorn's startup records are the ones that came with a colour copy.
    assert any(r["message"].startswith("Uvicorn running on") for r in records), records
    assert not [r for r in records if "color_message" in r]
    assert not [line for line in gateway.output if "\x1b" in line or "\\u001b" in line]
