"""The short form of the fault-injection suite, part of ``make test``: one machine's stack on
SQLite, and a cluster (3 export replicas on a PostgreSQL cluster of the test's own, 2 render
services) with replica kills, pauses past the lease, graceful restarts, render drains and
database restarts on top.

At least 20 jobs under every kind of fault; the run must find no violation, and must really
have injected every fault type (a chaos run that injected nothing proves nothing).
Replay a failure with ``CHAOS_SEED=<seed> pytest tests/chaos`` or
``python -m tests.chaos.harness --jobs 24 --seed <seed> [--cluster]``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.chaos.faults import WORKLOAD_FAULTS
from tests.chaos.harness import ChaosReport, ChaosSettings, run_chaos

DEFAULT_SEED = 20261128
CLUSTER_SEED = 20261130


async def _run_short(seed: int, jobs: int, cluster: bool) -> tuple[ChaosSettings, ChaosReport]:
    seed = int(os.environ.get("CHAOS_SEED") or seed)
    print(f"chaos seed: {seed}")
    # Not tmp_path: the logs, database and outputs of a failed run are evidence and are kept.
    workdir = Path(tempfile.mkdtemp(prefix=f"videojob-chaos-{seed}-"))
    settings = ChaosSettings(jobs=jobs, seed=seed, workdir=workdir, cluster=cluster)
    report = await run_chaos(settings)
    print(report.summary())
    if report.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    return settings, report


def _assert_clean(settings: ChaosSettings, report: ChaosReport, jobs: int) -> None:
    seed = settings.seed
    assert report.jobs >= jobs
    never_injected = [
        kind
        for kind in (*settings.fault_kinds, *WORKLOAD_FAULTS)
        if report.faults.get(kind, 0) == 0
    ]
    assert never_injected == [], f"seed {seed}: never injected {never_injected}"
    assert report.errors == [], f"seed {seed}: {report.errors}"
    assert report.violations == [], f"seed {seed}:\n{report.summary()}"
    assert sum(report.final_status.values()) == report.jobs


@pytest.mark.chaos
@pytest.mark.serial("serial:chaos-single")
@pytest.mark.timeout(240)
async def test_jobs_under_faults_keep_every_invariant() -> None:
    settings, report = await _run_short(DEFAULT_SEED, jobs=24, cluster=False)
    _assert_clean(settings, report, jobs=20)


@pytest.mark.chaos
@pytest.mark.serial("serial:chaos-cluster")
@pytest.mark.postgresql
@pytest.mark.timeout(300)
async def test_a_cluster_under_replica_render_and_database_faults_keeps_every_invariant() -> None:
    settings, report = await _run_short(CLUSTER_SEED, jobs=20, cluster=True)
    _assert_clean(settings, report, jobs=20)
    assert {"pause_export", "restart_export", "drain_render", "restart_database"} <= set(
        settings.fault_kinds
    )
