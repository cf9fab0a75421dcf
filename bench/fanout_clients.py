"""The fan-out load generator, run as its own process so it never shares the gateway's:
``python -m bench.fanout_clients --port P --jobs ID,ID --clients N --output FILE``.

Opens N SSE streams spread over the jobs, follows each to its terminal event and writes, as
JSON, every event's delivery lag: arrival time minus the job's updatedAt (the time the export
service wrote that version). The first event of each stream (the snapshot at connect) is not
a delivery and is left out."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from videojob.sse_client import SseStream

CONNECT_CONCURRENCY = 100
UPDATED_AT = '"updatedAt":"'


MAX_ERRORS_KEPT = 5


def parse_timestamp(text: str) -> float:
    """An RFC 3339 timestamp (``Z`` or an offset) as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _updated_at(data: str) -> float:
    start = data.index(UPDATED_AT) + len(UPDATED_AT)
    return parse_timestamp(data[start : data.index('"', start)])


async def _client(
    port: int,
    job_id: str,
    gate: asyncio.Semaphore,
    lags: list[float],
    outcome: dict[str, int],
    errors: list[str],
) -> None:
    async with gate:
        try:
            stream = await SseStream.open("127.0.0.1", port, f"/api/jobs/{job_id}/events")
        except (OSError, ConnectionError) as error:
            outcome["connect_failed"] += 1
            if len(errors) < MAX_ERRORS_KEPT:
                errors.append(f"{type(error).__name__}: {error}")
            return
    outcome["connected"] += 1
    first = True
    try:
        async for event in stream.events():
            if not first:
                lags.append(event.received - _updated_at(event.text))
            first = False
            outcome["events"] += 1
            if event.terminal:
                outcome["terminal"] += 1
                return
        outcome["closed_early"] += 1
    except (OSError, asyncio.IncompleteReadError):
        outcome["closed_early"] += 1
    finally:
        await stream.close()


async def run_clients(port: int, jobs: list[str], clients: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    lags: list[float] = []
    errors: list[str] = []
    outcome = dict.fromkeys(
        ("connected", "connect_failed", "events", "terminal", "closed_early"), 0
    )
    started = time.monotonic()
    await asyncio.gather(
        *(_client(port, jobs[i % len(jobs)], gate, lags, outcome, errors) for i in range(clients))
    )
    return {
        **outcome,
        "clients": clients,
        "seconds": time.monotonic() - started,
        "lags": lags,
        "errors": errors,
    }


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout_clients")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jobs", required=True, help="job ids, comma-separated")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    raise_fd_limit(args.clients + 256)
    summary = asyncio.run(run_clients(args.port, args.jobs.split(","), args.clients))
    args.output.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
