"""Each benchmark runs end to end in its tiny (--quick) configuration and produces numbers;
no assertion is about speed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.registry import BENCHMARKS
from bench.report import BenchResult


def _numbers(result: BenchResult) -> list[float]:
    return [m.value for m in result.metrics if m.value is not None and not math.isnan(m.value)]


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_runs_and_reports_numbers(name: str, tmp_path: Path) -> None:
    result: BenchResult = BENCHMARKS[name].run(tmp_path, True)
    if result.skipped:
        pytest.skip(result.skipped)
    assert not result.error
    assert result.metrics, "a benchmark reports at least one metric"
    assert _numbers(result), f"{name} produced no numbers: {result.metrics}"
    details = result.details
    if name == "overhead":
        assert details["all_completed"]
    elif name == "latency":
        assert details["all_terminal"] and details["completion_samples"] == details["jobs"]
    elif name == "fanout":
        for level in details["levels"]:
            assert level["terminal"] == level["clients"]
    elif name == "tracking":
        assert details["all_terminal"], details["statuses"]
        assert details["all_completed"], details["statuses"]
    elif name == "poll":
        assert result.metrics[-1].value is not None and result.metrics[-1].value > 0
