"""Every benchmark by its name, in the order they run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

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
# The form the test suite runs: each benchmark's smallest that still goes end to end (`make
# bench` and --quick keep their own sizes).
SMOKE_FORMS: dict[str, Callable[[Path], BenchResult]] = {
    bench_overhead.NAME: bench_overhead.smoke,
    bench_latency.NAME: bench_latency.smoke,
    bench_versus_celery.NAME: bench_versus_celery.smoke,
    bench_fanout.NAME: bench_fanout.smoke,
    bench_poll.NAME: bench_poll.smoke,
    bench_tracking.NAME: bench_tracking.smoke,
    bench_store.NAME: bench_store.smoke,
    bench_replica_changes.NAME: bench_replica_changes.smoke,
    bench_ownership.NAME: bench_ownership.smoke,
    bench_tracking_replicas.NAME: bench_tracking_replicas.smoke,
    bench_observability.NAME: bench_observability.smoke,
    bench_render_pool.NAME: bench_render_pool.smoke,
    bench_object_store.NAME: bench_object_store.smoke,
    bench_webhooks.NAME: bench_webhooks.smoke,
    bench_split.NAME: bench_split.smoke,
}


def run_smoke(name: str, workdir: Path) -> BenchResult:
    """The named benchmark in its smoke form."""
    return SMOKE_FORMS[name](workdir)
