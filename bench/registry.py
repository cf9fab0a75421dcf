"""Every benchmark by its name, in the order they run."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Protocol

from bench import (
    bench_fanout,
    bench_latency,
    bench_observability,
    bench_overhead,
    bench_poll,
    bench_replica_changes,
    bench_store,
    bench_tracking,
)
from bench.report import BenchResult


class Benchmark(Protocol):
    NAME: str
    TITLE: str

    def run(self, workdir: Path, quick: bool) -> BenchResult: ...


BENCHMARK_MODULES: tuple[ModuleType, ...] = (
    bench_overhead,
    bench_latency,
    bench_fanout,
    bench_poll,
    bench_tracking,
    bench_store,
    bench_replica_changes,
    bench_observability,
)
BENCHMARKS: dict[str, ModuleType] = {module.NAME: module for module in BENCHMARK_MODULES}
