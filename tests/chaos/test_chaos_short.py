"""The short form of the fault-injection suite, part of ``make test``.

At least 20 jobs under every kind of fault; the run must find no violation, and must really
have injected every fault type (a chaos run that injected nothing proves nothing).
Replay a failure with ``CHAOS_SEED=<seed> pytest tests/chaos`` or
``python -m tests.chaos.harness --jobs 24 --seed <seed>``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.chaos.faults import FAULT_TYPES, WORKLOAD_FAULTS
from tests.chaos.harness import ChaosSettings, run_chaos

DEFAULT_SEED = 20261128


@pytest.mark.chaos
@pytest.mark.timeout(240)
async def test_jobs_under_faults_keep_every_invariant() -> None:
    seed = int(os.environ.get("CHAOS_SEED") or DEFAULT_SEED)
    print(f"chaos seed: {seed}")
    # Not tmp_path: the logs, database and outputs of a failed run are evidence and are kept.
    workdir = Path(tempfile.mkdtemp(prefix=f"videojob-chaos-{seed}-"))
    report = await run_chaos(ChaosSettings(jobs=24, seed=seed, workdir=workdir))
    print(report.summary())
    if report.ok:
        shutil.rmtree(workdir, ignore_errors=True)

    assert report.jobs >= 20
    never_injected = [
        kind for kind in (*FAULT_TYPES, *WORKLOAD_FAULTS) if report.faults.get(kind, 0) == 0
    ]
    assert never_injected == [], f"seed {seed}: never injected {never_injected}"
    assert report.errors == [], f"seed {seed}: {report.errors}"
    assert report.violations == [], f"seed {seed}:\n{report.summary()}"
    assert sum(report.final_status.values()) == report.jobs
