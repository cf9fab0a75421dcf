"""4. Fan-out: 100, 1,000 and 2,000 concurrent SSE clients on running jobs against one gateway
process: delivery lag p50/p99 and the gateway's peak RSS (VmHWM). Jobs run on the synthetic
render server (progress at 10 Hz); the clients are a separate process (bench.fanout_clients);
each level gets fresh processes so peak RSS belongs to that level alone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from bench import procfs
from bench.fanout_clients import raise_fd_limit
from bench.jobs import create_job, test_pattern_spec
from bench.report import BenchResult
from bench.stack import running_stack
from bench.stats import percentile
from videojob_launcher.process import PROJECT_ROOT

NAME = "fanout"
TITLE = "SSE fan-out on one gateway"


async def _create_jobs(base_url: str, count: int, duration: float) -> list[str]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        spec = test_pattern_spec(duration, 1280, 720)
        return [(await create_job(client, spec))["id"] for _ in range(count)]


def _level(workdir: Path, clients: int, jobs: int, duration: float) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "clients.json"
    with running_stack(workdir, synthetic=True) as stack:
        rss_before = procfs.rss_mib(stack.gateway.pid)
        job_ids = asyncio.run(_create_jobs(stack.url, jobs, duration))
        generator = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.fanout_clients",
                "--port",
                str(stack.gateway.port),
                "--jobs",
                ",".join(job_ids),
                "--clients",
                str(clients),
                "--output",
                str(output),
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=duration + 300,
            check=False,
        )
        if generator.returncode != 0:
            raise RuntimeError(f"fanout_clients failed: {generator.stderr[-1000:]}")
        peak = procfs.peak_rss_mib(stack.gateway.pid)
    summary: dict[str, Any] = json.loads(output.read_text())
    lags = summary.pop("lags")
    return {
        **summary,
        "jobs": jobs,
        "delivered": len(lags),
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "lag_max_ms": max(lags, default=float("nan")) * 1000,
        "gateway_rss_idle_mib": rss_before,
        "gateway_peak_rss_mib": peak,
    }


def run(workdir: Path, quick: bool) -> BenchResult:
    if quick:
        return run_levels(workdir, (10,), 2, 3.0)
    return run_levels(workdir, (100, 1000, 2000), 10, 20.0)


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: a few clients on one job."""
    return run_levels(workdir, (3,), 1, 2.0)


def run_levels(workdir: Path, levels: tuple[int, ...], jobs: int, duration: float) -> BenchResult:
    raise_fd_limit(max(levels) * 3 + 256)
    result = BenchResult(NAME, TITLE)
    runs = []
    for clients in levels:
        item = _level(workdir / f"clients-{clients}", clients, jobs, duration)
        runs.append(item)
        result.add(f"{clients} clients: delivery lag p50", item["lag_p50_ms"], "ms")
        result.add(f"{clients} clients: delivery lag p99", item["lag_p99_ms"], "ms")
        result.add(f"{clients} clients: gateway peak RSS", item["gateway_peak_rss_mib"], "MiB")
        result.add(f"{clients} clients: streams reaching terminal", item["terminal"], "clients")
    result.details = {"levels": runs, "jobs_per_level": jobs, "job_seconds": duration}
    return result
