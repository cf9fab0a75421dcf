"""Benchmark results: the printed table and bench/results.json."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_PATH = Path(__file__).resolve().parent / "results.json"


@dataclass
class Metric:
    name: str
    value: float | None
    unit: str
    # The aim as text (e.g. "<= 1.05") and whether this run met it; None when there is no aim.
    aim: str = ""
    met: bool | None = None


@dataclass
class BenchResult:
    name: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""
    error: str = ""
    seconds: float = 0.0

    def add(
        self, name: str, value: float | None, unit: str, *, at_most: float | None = None
    ) -> Metric:
        aim = ""
        met: bool | None = None
        if at_most is not None:
            aim = f"<= {at_most:g}"
            met = value is not None and not math.isnan(value) and value <= at_most
        metric = Metric(name, value, unit, aim, met)
        self.metrics.append(metric)
        return metric


def _format_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(results: list[BenchResult]) -> str:
    rows: list[tuple[str, str, str, str, str, str]] = [
        ("benchmark", "metric", "value", "unit", "aim", "met")
    ]
    for result in results:
        if result.skipped or result.error:
            status = f"SKIPPED: {result.skipped}" if result.skipped else f"ERROR: {result.error}"
            rows.append((result.name, status[:90], "", "", "", ""))
            continue
        for index, metric in enumerate(result.metrics):
            met = "" if metric.met is None else ("yes" if metric.met else "NO")
            rows.append(
                (
                    result.name if index == 0 else "",
                    metric.name,
                    _format_value(metric.value),
                    metric.unit,
                    metric.aim,
                    met,
                )
            )
    widths = [max(len(row[column]) for row in rows) for column in range(6)]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i == 2 else cell.ljust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if number == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_json(document: dict[str, Any], path: Path = RESULTS_PATH) -> None:
    """Writes atomically (a temporary file renamed over the old one)."""
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(_json_safe(document), indent=2) + "\n")
    os.replace(temporary, path)


def merged(path: Path, documents: list[dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    """The results file at ``path`` with ``documents`` in place of the results of the same
    names (or added after them); each merged result keeps ``run`` (when, how and where it ran)
    beside it, since the file's own say so only for the run that wrote it whole."""
    document: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {**run}
    results: list[dict[str, Any]] = list(document.get("results", []))
    for new in documents:
        new = {**new, "run": run}
        names = [result["name"] for result in results]
        if new["name"] in names:
            results[names.index(new["name"])] = new
        else:
            results.append(new)
    return {**document, "results": results}


def result_document(result: BenchResult) -> dict[str, Any]:
    return asdict(result)
