"""The cost of observability on completion latency and progress freshness: the latency
benchmark (bench.bench_latency) twice in one run, on fresh stacks, first plain (no metrics
endpoints, text logs) then observed (``--metrics-listen`` on the render and export services,
JSON logs on all three processes, and every ``/metrics`` scraped once a second meanwhile, far
more often than a Prometheus would). The counters themselves are always updated: what the plain
run leaves out is serving and scraping them, and rendering log records as JSON.

The two modes alternate over rounds (plain then observed, observed then plain, ...) on a fresh
stack each, and their samples are pooled per mode, so that a machine getting busier during the
run weighs on both alike."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from bench import ffmpeg_wrapper
from bench.bench_latency import _measure
from bench.jobs import test_pattern_spec
from bench.report import BenchResult
from bench.stats import percentile
from videojob.launcher import Role, Stack, StackConfig

NAME = "observability"
TITLE = "Overhead of metrics and JSON logs on latency"

SCRAPE_INTERVAL_SECONDS = 1.0
MODES = ("plain", "observed")
# The raw samples of bench_latency (its details), in ms, pooled per mode.
SAMPLES = {
    "exit -> completed at SSE": "sse_lags_ms",
    "exit -> completed at poller": "poll_lags_ms",
    "progress block -> SSE": "freshness_lags_ms",
}


def _free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@contextlib.contextmanager
def _stack(
    workdir: Path, render_env: Mapping[str, str], metrics: tuple[str, str] | None
) -> Iterator[Stack]:
    log_format = ["--log-format", "json" if metrics else "text"]
    render_args = ["--max-concurrent", "1", *log_format]
    export_args = list(log_format)
    if metrics is not None:
        render_args += ["--metrics-listen", metrics[0]]
        export_args += ["--metrics-listen", metrics[1]]
    config = StackConfig(
        workdir,
        output_dir=workdir / "output",
        render=Role(args=tuple(render_args), env=dict(render_env)),
        export=Role(args=tuple(export_args)),
        gateway=Role(args=tuple(log_format)),
        stop_grace=10.0,
    )
    with Stack(config) as stack:
        yield stack


async def _scrape(urls: list[str], counts: dict[str, int]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            for url in urls:
                answer = await client.get(url)
                answer.raise_for_status()
                counts[url] = counts.get(url, 0) + 1
            await asyncio.sleep(SCRAPE_INTERVAL_SECONDS)


async def _measure_scraped(
    stack: Stack, log: Path, jobs: int, spec: dict[str, object], urls: list[str]
) -> tuple[BenchResult, int]:
    counts: dict[str, int] = {}
    scraper = asyncio.create_task(_scrape(urls, counts)) if urls else None
    try:
        result = await _measure(stack, log, jobs, spec)
    finally:
        if scraper is not None:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
    return result, sum(counts.values())


def _round(workdir: Path, mode: str, jobs: int, spec: dict[str, object]) -> tuple[BenchResult, int]:
    workdir.mkdir()
    env, log = ffmpeg_wrapper.install(workdir)
    metrics = (_free_address(), _free_address()) if mode == "observed" else None
    with _stack(workdir, env, metrics) as stack:
        urls = []
        if metrics is not None:
            urls = [f"http://{address}/metrics" for address in metrics]
            urls.append(f"{stack.url}/metrics")
        return asyncio.run(_measure_scraped(stack, log, jobs, spec, urls))


def run(workdir: Path, quick: bool) -> BenchResult:
    rounds, jobs = (2, 8) if quick else (4, 20)
    # Quick: the latency benchmark's small frame, long enough for progress events to match.
    spec = test_pattern_spec(3.0, 640, 360) if quick else test_pattern_spec(4.0, 1280, 720)
    samples: dict[str, dict[str, list[float]]] = {
        mode: {key: [] for key in SAMPLES.values()} for mode in MODES
    }
    tallies: dict[str, dict[str, int]] = {mode: {"scrapes": 0, "failed": 0} for mode in MODES}
    for index in range(rounds):
        order = MODES if index % 2 == 0 else MODES[::-1]
        for mode in order:
            measured, scrapes = _round(workdir / f"{index}-{mode}", mode, jobs, spec)
            for key in SAMPLES.values():
                samples[mode][key] += measured.details.get(key, [])
            outcomes = measured.details.get("outcomes", {})
            tallies[mode]["scrapes"] += scrapes
            tallies[mode]["failed"] += jobs - int(outcomes.get("completed", 0))
    result = BenchResult(NAME, TITLE)
    for name, key in SAMPLES.items():
        for quantile in (0.5, 0.99):
            for mode in MODES:
                value = percentile(samples[mode][key], quantile)
                result.add(f"{name}, p{round(quantile * 100)} ({mode})", value, "ms")
    result.details = {
        "rounds": rounds,
        "jobs_per_round": jobs,
        "spec": spec,
        "scrape_interval_seconds": SCRAPE_INTERVAL_SECONDS,
        **{
            mode: {
                **tallies[mode],
                **{key: len(values) for key, values in samples[mode].items()},
            }
            for mode in MODES
        },
        "samples_ms": samples,
    }
    return result
