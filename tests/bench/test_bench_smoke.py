"""Each benchmark runs end to end in its smoke form (its smallest configuration) and produces
numbers; no assertion is about speed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.registry import BENCHMARKS, SMOKE_FORMS, run_smoke
from bench.report import Metric


def _numbers(metrics: list[Metric]) -> list[float]:
    return [m.value for m in metrics if m.value is not None and not math.isnan(m.value)]


def test_every_benchmark_has_a_smoke_form() -> None:
    assert set(SMOKE_FORMS) == set(BENCHMARKS)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_runs_and_reports_numbers(name: str, tmp_path: Path) -> None:
    result = run_smoke(name, tmp_path)
    if result.skipped:
        pytest.skip(result.skipped)
    assert not result.error
    assert result.metrics, "a benchmark reports at least one metric"
    assert _numbers(result.metrics), f"{name} produced no numbers: {result.metrics}"
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
    elif name == "observability":
        for mode in ("plain", "observed"):
            ran = details[mode]
            jobs = details["rounds"] * details["latency_jobs_per_round"]
            assert ran["latency_outcomes"] == {"completed": jobs}, ran["latency_outcomes"]
            assert ran["fanout"]["terminal"] == ran["fanout"]["clients"] > 0
            assert ran["fanout_delivered"] > 0
            reported = [m for m in result.metrics if m.name.endswith(f"({mode})")]
            assert _numbers(reported), f"no numbers for {mode}"
        assert details["plain"]["scrapes"] == 0
        assert details["observed"]["scrapes"] > 0
    elif name == "object_store":
        assert details["upload"]["videojob_sha256_matches_file"]
        outcomes = details["completion"]["outcomes"]
        assert set(outcomes["local"]) == set(outcomes["s3"]) == {"completed"}, outcomes
        assert details["downloads"]["bodies_match_output_sha256"]
        assert details["downloads"]["requests_per_read"] == {
            "proxied": 1,
            "redirect": 2,
            "direct": 1,
        }
    elif name == "versus_celery":
        for side in ("videojob", "bare", "celery"):
            ran = details[side]
            assert ran["outcomes"] == {"completed": details["jobs_per_side"]}, ran["outcomes"]
            for figure in ("fixed_cost", "completion", "progress"):
                assert ran["samples"][figure] > 0, (side, figure, ran["samples"])
    elif name == "split":
        assert details["plan"]["parts"] == [50, 50], details["plan"]
        rounds = details["rounds"]
        for form in ("audio in join", "audio apart"):
            (ran,) = rounds[form]
            assert len(ran["parts_s"]) == 2 and ran["join_s"] > 0, ran
            assert (ran["audio_s"] is not None) == (form == "audio apart"), ran
        assert details["short_job"]["verdict"].startswith("rendered whole: too short")
        psnr = {m.name: m.value for m in result.metrics if m.name.startswith("PSNR")}
        assert psnr["PSNR whole vs source"] and psnr["PSNR split vs source"], psnr
    elif name == "webhooks":
        jobs = details["jobs_per_side"]
        for side in ("plain", "hanging"):
            assert details["outcomes"][side] == ["completed"] * jobs, details["outcomes"]
            assert details["event_types"][side] == ["dev.videojob.export.completed"]
            assert details["commit_samples"][side] == jobs, details["commit_samples"]
        assert details["all_verified"]
        # The hanging endpoint got attempts, never more at once than its cap.
        cap = details["deliverer"]["per_endpoint"]
        assert details["hanging_receiver"]["requests"] >= min(jobs, cap)
        assert details["hanging_receiver"]["peak_open"] <= cap
