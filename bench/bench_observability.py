"""The cost of observability on completion latency, progress freshness and SSE fan-out: the
latency benchmark (bench.bench_latency) and a fan-out level (bench.bench_fanout's clients, on
bench's synthetic render server) in two modes in one run, each on a fresh stack: plain (no
metrics endpoints, text logs) and observed (``--metrics-listen`` on the export service and, in
the latency runs, the render service; JSON logs on every real process; every ``/metrics``
scraped once a second meanwhile, far more often than a Prometheus would). The counters
themselves are always updated: what the plain runs leave out is serving and scraping them, and
rendering log records as JSON. The synthetic render server has neither metrics nor log flags:
in the fan-out runs only the export service and the gateway differ between the modes.

The two modes alternate over rounds (plain then observed, observed then plain, ...) and their
samples are pooled per mode, so that a machine getting busier during the run weighs on both
alike. ``run`` has the full and the quick form; ``smoke`` is one round of each mode, small
enough for the test suite."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench import ffmpeg_wrapper, procfs
from bench.bench_fanout import _create_jobs
from bench.bench_latency import _measure
from bench.fanout_clients import raise_fd_limit
from bench.jobs import test_pattern_spec
from bench.report import BenchResult
from bench.stack import SYNTHETIC_RENDER_MODULE
from bench.stats import percentile
from videojob_launcher import Role, Stack, StackConfig
from videojob_launcher.process import PROJECT_ROOT

NAME = "observability"
TITLE = "Overhead of metrics and JSON logs on latency and fan-out"

SCRAPE_INTERVAL_SECONDS = 1.0
FANOUT_TRIES = 3
MODES = ("plain", "observed")
# The raw samples of bench_latency (its details), in ms, pooled per mode.
SAMPLES = {
    "exit -> completed at SSE": "sse_lags_ms",
    "exit -> completed at poller": "poll_lags_ms",
    "progress block -> SSE": "freshness_lags_ms",
}
FANOUT_COUNTS = ("clients", "connected", "connect_failed", "terminal", "closed_early", "events")

Measured = TypeVar("Measured")


@dataclasses.dataclass(frozen=True)
class Size:
    rounds: int
    latency_jobs: int
    latency_spec: dict[str, Any]
    fanout_clients: int
    fanout_jobs: int
    fanout_job_seconds: float


SIZES = {
    "full": Size(4, 20, test_pattern_spec(4.0, 1280, 720), 200, 4, 10.0),
    # The latency benchmark's small frame, long enough for progress events to match.
    "quick": Size(2, 8, test_pattern_spec(3.0, 640, 360), 200, 2, 3.0),
    # One job of each kind: a tiny render; a fan-out job long enough for clients that start
    # late on a busy machine to still see it change.
    "smoke": Size(1, 1, test_pattern_spec(1.0, 160, 120, preset="ultrafast"), 3, 1, 2.0),
}


def _free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@contextlib.contextmanager
def _stack(workdir: Path, mode: str, render: Role) -> Iterator[tuple[Stack, list[str]]]:
    """The stack in ``mode``, and the ``/metrics`` URLs to scrape (none when plain). A render
    role with a ``module`` is a stand-in that takes neither log nor metrics flags."""
    observed = mode == "observed"
    log_format = ("--log-format", "json" if observed else "text")
    real_render = not render.module
    render_metrics = _free_address() if observed and real_render else ""
    export_metrics = _free_address() if observed else ""
    render_args = [*render.args, *(log_format if real_render else ())]
    export_args = list(log_format)
    if render_metrics:
        render_args += ["--metrics-listen", render_metrics]
    if export_metrics:
        export_args += ["--metrics-listen", export_metrics]
    config = StackConfig(
        workdir,
        output_dir=workdir / "output",
        render=dataclasses.replace(render, args=tuple(render_args)),
        export=Role(args=tuple(export_args)),
        gateway=Role(args=log_format),
        stop_grace=10.0,
    )
    with Stack(config) as stack:
        addresses = [address for address in (render_metrics, export_metrics) if address]
        urls = [f"http://{address}/metrics" for address in addresses]
        if observed:
            urls.append(f"{stack.url}/metrics")
        yield stack, urls


async def _scrape_once(client: httpx.AsyncClient, urls: list[str], counts: dict[str, int]) -> None:
    for url in urls:
        answer = await client.get(url)
        answer.raise_for_status()
        counts[url] = counts.get(url, 0) + 1


async def _scrape(client: httpx.AsyncClient, urls: list[str], counts: dict[str, int]) -> None:
    while True:
        await asyncio.sleep(SCRAPE_INTERVAL_SECONDS)
        await _scrape_once(client, urls, counts)


async def _scraped(
    measure: Callable[[], Awaitable[Measured]], urls: list[str]
) -> tuple[Measured, int]:
    """``measure()`` while ``urls`` are scraped; each answers once before it starts."""
    counts: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        await _scrape_once(client, urls, counts)
        scraper = asyncio.create_task(_scrape(client, urls, counts)) if urls else None
        try:
            measured = await measure()
        finally:
            if scraper is not None:
                scraper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scraper
    return measured, sum(counts.values())


def _latency_round(workdir: Path, mode: str, size: Size) -> tuple[BenchResult, int]:
    workdir.mkdir(parents=True)
    env, log = ffmpeg_wrapper.install(workdir)
    render = Role(args=("--max-concurrent", "1"), env=env)
    with _stack(workdir, mode, render) as (stack, urls):
        return asyncio.run(
            _scraped(lambda: _measure(stack, log, size.latency_jobs, size.latency_spec), urls)
        )


async def _fan_out(stack: Stack, size: Size, output: Path) -> dict[str, Any]:
    """bench.fanout_clients on freshly created jobs: its summary. A round whose clients all
    connected after the jobs had ended (their process started late on a loaded machine) saw no
    change to time and is made again, a few times at most."""
    for _ in range(FANOUT_TRIES - 1):
        summary = await _fan_out_once(stack, size, output)
        if summary["lags"]:
            return summary
    return await _fan_out_once(stack, size, output)


async def _fan_out_once(stack: Stack, size: Size, output: Path) -> dict[str, Any]:
    """bench.fanout_clients, as its own process, on freshly created jobs: its summary."""
    job_ids = await _create_jobs(stack.url, size.fanout_jobs, size.fanout_job_seconds)
    generator = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.fanout_clients", "--port", str(stack.gateway.port)),
        *("--jobs", ",".join(job_ids), "--clients", str(size.fanout_clients)),
        *("--output", str(output)),
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(
            generator.communicate(), timeout=size.fanout_job_seconds + 300
        )
    except TimeoutError:
        generator.kill()
        await generator.wait()
        raise
    if generator.returncode != 0:
        raise RuntimeError(f"fanout_clients failed: {stderr.decode()[-1000:]}")
    summary: dict[str, Any] = json.loads(await asyncio.to_thread(output.read_text))
    return summary


def _fanout_round(workdir: Path, mode: str, size: Size) -> tuple[dict[str, Any], int, float]:
    """The clients' summary, the scrapes made meanwhile and the gateway's peak RSS (MiB)."""
    workdir.mkdir(parents=True)
    render = Role(module=SYNTHETIC_RENDER_MODULE)
    with _stack(workdir, mode, render) as (stack, urls):
        summary, scrapes = asyncio.run(
            _scraped(lambda: _fan_out(stack, size, workdir / "clients.json"), urls)
        )
        return summary, scrapes, procfs.peak_rss_mib(stack.gateway.pid)


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_size(workdir, SIZES["quick" if quick else "full"])


def smoke(workdir: Path) -> BenchResult:
    return run_size(workdir, SIZES["smoke"])


def run_size(workdir: Path, size: Size) -> BenchResult:
    raise_fd_limit(size.fanout_clients * 3 + 256)
    samples: dict[str, dict[str, list[float]]] = {
        mode: {key: [] for key in SAMPLES.values()} for mode in MODES
    }
    fanout_lags: dict[str, list[float]] = {mode: [] for mode in MODES}
    tallies: dict[str, dict[str, Any]] = {
        mode: {
            "scrapes": 0,
            "latency_outcomes": {},
            "fanout": dict.fromkeys(FANOUT_COUNTS, 0),
            "fanout_gateway_peak_rss_mib": [],
        }
        for mode in MODES
    }
    for index in range(size.rounds):
        order = MODES if index % 2 == 0 else MODES[::-1]
        for mode in order:
            tally = tallies[mode]
            measured, scrapes = _latency_round(workdir / f"{index}-{mode}-latency", mode, size)
            for key in SAMPLES.values():
                samples[mode][key] += measured.details.get(key, [])
            tally["scrapes"] += scrapes
            outcomes = tally["latency_outcomes"]
            for outcome, count in measured.details["outcomes"].items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
            summary, scrapes, peak = _fanout_round(workdir / f"{index}-{mode}-fanout", mode, size)
            fanout_lags[mode] += [lag * 1000 for lag in summary["lags"]]
            for key in FANOUT_COUNTS:
                tally["fanout"][key] += summary[key]
            tally["scrapes"] += scrapes
            tally["fanout_gateway_peak_rss_mib"].append(peak)
    result = BenchResult(NAME, TITLE)
    for name, key in SAMPLES.items():
        for quantile in (0.5, 0.99):
            for mode in MODES:
                value = percentile(samples[mode][key], quantile)
                result.add(f"{name}, p{round(quantile * 100)} ({mode})", value, "ms")
    fanout_name = f"fan-out delivery lag, {size.fanout_clients} clients"
    for quantile in (0.5, 0.99):
        for mode in MODES:
            value = percentile(fanout_lags[mode], quantile)
            result.add(f"{fanout_name}, p{round(quantile * 100)} ({mode})", value, "ms")
    for mode in MODES:
        peak = max(tallies[mode]["fanout_gateway_peak_rss_mib"], default=float("nan"))
        result.add(f"fan-out gateway peak RSS ({mode})", peak, "MiB")
    result.details = {
        "rounds": size.rounds,
        "latency_jobs_per_round": size.latency_jobs,
        "latency_spec": size.latency_spec,
        "fanout_clients": size.fanout_clients,
        "fanout_jobs_per_round": size.fanout_jobs,
        "fanout_job_seconds": size.fanout_job_seconds,
        "scrape_interval_seconds": SCRAPE_INTERVAL_SECONDS,
        **{
            mode: {
                **tallies[mode],
                **{key: len(values) for key, values in samples[mode].items()},
                "fanout_delivered": len(fanout_lags[mode]),
            }
            for mode in MODES
        },
        "samples_ms": samples,
    }
    return result
