"""5. Poll throughput: ``GET /api/jobs/{id}`` requests per second on one gateway process, as a
ratio to a trivial endpoint of the same server, measured by wrk (Debian's package). The two
alternate, twice each, and the medians are compared."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx

from bench.jobs import create_job, follow_job, test_pattern_spec
from bench.report import BenchResult
from bench.stack import running_stack
from bench.stats import median

NAME = "poll"
TITLE = "Poll throughput (wrk)"
logger = logging.getLogger(__name__)

# The first that answers 200 is the baseline; /livez answers without any gRPC call.
TRIVIAL_CANDIDATES = ("/livez", "/openapi.json")
CONNECTIONS = 32
_REQUESTS_PER_SECOND = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


def ensure_wrk() -> str | None:
    """wrk's path, installing Debian's package when it is missing and apt-get is usable."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    logger.info("installing wrk with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "install", "-y", "-q", "wrk"], ["apt-get", "update", "-q"]):
        subprocess.run(command, env=env, capture_output=True, check=False, timeout=600)
        if shutil.which("wrk"):
            break
    else:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            env=env,
            capture_output=True,
            check=False,
            timeout=600,
        )
    return shutil.which("wrk")


def wrk(binary: str, url: str, seconds: int) -> float:
    completed = subprocess.run(
        [binary, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    errors = _NON_2XX.search(completed.stdout)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} responses were not 2xx")
    match = _REQUESTS_PER_SECOND.search(completed.stdout)
    if match is None:
        raise RuntimeError(f"unexpected wrk output: {completed.stdout}")
    return float(match.group(1))


async def _prepare(base_url: str, gateway_port: int) -> tuple[str, str]:
    """A completed job's id and the trivial endpoint to compare it with."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        job = await create_job(client, test_pattern_spec(0.5, 320, 240))
        events = await follow_job(gateway_port, job["id"])
        if events[-1].name != "completed":
            raise RuntimeError(f"job {job['id']} ended {events[-1].name}")
        for path in TRIVIAL_CANDIDATES:
            if (await client.get(path)).status_code == 200:
                return job["id"], path
    raise RuntimeError(f"none of {TRIVIAL_CANDIDATES} answered 200")


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_wrk(workdir, 1, 1) if quick else run_wrk(workdir, 8, 2)


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: the quick form, already the least wrk runs (whole seconds)."""
    return run_wrk(workdir, 1, 1)


def run_wrk(workdir: Path, seconds: int, repeats: int) -> BenchResult:
    """``repeats`` alternations of ``seconds`` of wrk on each endpoint."""
    result = BenchResult(NAME, TITLE)
    binary = ensure_wrk()
    if binary is None:
        result.skipped = "wrk is not installed and cannot be (apt-get install wrk)"
        return result
    with running_stack(workdir, synthetic=True) as stack:
        job_id, trivial = asyncio.run(_prepare(stack.url, stack.gateway.port))
        job_rates: list[float] = []
        trivial_rates: list[float] = []
        for _ in range(repeats):
            trivial_rates.append(wrk(binary, stack.url + trivial, seconds))
            job_rates.append(wrk(binary, f"{stack.url}/api/jobs/{job_id}", seconds))
    result.add(f"GET {trivial}", median(trivial_rates), "req/s")
    result.add("GET /api/jobs/{id}", median(job_rates), "req/s")
    result.add("job / trivial", median(job_rates) / median(trivial_rates), "x")
    result.details = {
        "trivial_endpoint": trivial,
        "trivial_rates": trivial_rates,
        "job_rates": job_rates,
        "wrk": f"-t1 -c{CONNECTIONS} -d{seconds}s",
    }
    return result
