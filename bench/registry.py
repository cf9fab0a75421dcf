"""Every benchmark by its name, in the order they run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Protocol

from bench import (
    bench_fanout,
    bench_latency,
    bench_object_store,
    bench_observability,
    bench_overhead,
    bench_ownership,
    bench_poll,
    bench_render_pool,
    bench_replica_changes,
    bench_split,
    bench_store,
    bench_tracking,
    bench_tracking_replicas,
    bench_versus_celery,
    bench_webhooks,
)
from bench.report import BenchResult


class Benchmark(Protocol):
    NAME: str
    TITLE: str

    def run(self, workdir: Path, quick: bool) -> BenchResult: ...


BENCHMARK_MODULES: tuple[ModuleType, ...] = (
    bench_overhead,
    bench_latency,
    bench_versus_celery,
    bench_fanout,
    bench_poll,
    bench_tracking,
    bench_store,
    bench_replica_changes,
    bench_ownership,
    bench_tracking_replicas,
    bench_observability,
    bench_render_pool,
    bench_object_store,
    bench_webhooks,
    bench_split,
)
BENCHMARKS: dict[str, ModuleType] = {module.NAME: module for module in BENCHMARK_MODULES}
# The smaller form the test suite runs, where a benchmark's quick form is too long for it.
SMOKE_FORMS: dict[str, Callable[[Path], BenchResult]] = {
    bench_observability.NAME: bench_observability.smoke,
    bench_ownership.NAME: bench_ownership.smoke,
    bench_tracking_replicas.NAME: bench_tracking_replicas.smoke,
    bench_versus_celery.NAME: bench_versus_celery.smoke,
}


def run_smoke(name: str, workdir: Path) -> BenchResult:
    """The named benchmark in its smoke form, else its quick form."""
    smoke = SMOKE_FORMS.get(name)
    if smoke is not None:
        return smoke(workdir)
    benchmark: Benchmark = BENCHMARKS[name]
    return benchmark.run(workdir, True)
