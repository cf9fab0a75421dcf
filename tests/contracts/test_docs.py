"""The README opens with what a newcomer needs and links the reference in docs/, and the
reference covers what the code defines: every metric and every tracker label the services can
expose, every flag (docs/flags.md is generated from the flag tables and must be current)."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

from export_service.tracking.activity_labels import (
    OBSERVATION_LABELS,
    QUESTION_LABELS,
    TRACKER_START,
)
from export_service.tracking.observations import RpcFailed
from tests.support.processes import REPO_ROOT
from videojob import metrics

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
# Stays a quick download for the README's first screen.
MAX_SCREENSHOT_BYTES = 200 * 1024
_LOCAL_LINK = re.compile(r"\]\(([^)#:]+)\)|src=\"([^\":]+)\"")


def _flags_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "flags_reference_for_docs", REPO_ROOT / "scripts" / "flags_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_keeps_the_two_commands_and_links_files_that_exist() -> None:
    readme = README.read_text(encoding="utf-8")
    assert "make run    # " in readme and "make test   # " in readme
    linked = [a or b for a, b in _LOCAL_LINK.findall(readme)]
    assert "docs/page.png" in linked and "docs/operations.md" in linked, linked
    missing = [target for target in linked if not (REPO_ROOT / target).is_file()]
    assert missing == []
    assert (DOCS / "page.png").stat().st_size < MAX_SCREENSHOT_BYTES


def test_every_docs_page_links_files_that_exist() -> None:
    broken = [
        (page.name, target)
        for page in sorted(DOCS.glob("*.md"))
        for a, b in _LOCAL_LINK.findall(page.read_text(encoding="utf-8"))
        for target in [a or b]
        if not (page.parent / target).exists()
    ]
    assert broken == []


def test_every_metric_is_in_the_operations_reference() -> None:
    reference = (DOCS / "operations.md").read_text(encoding="utf-8")
    names = {
        family.name + ("_total" if family.type == "counter" else "")
        for registry in (metrics.EXPORT, metrics.RENDER, metrics.GATEWAY)
        for family in registry.collect()
    }
    assert names
    assert sorted(name for name in names if f"`{name}`" not in reference) == []


def test_every_tracker_label_is_in_the_operations_reference() -> None:
    reference = (DOCS / "operations.md").read_text(encoding="utf-8")
    labels = {*QUESTION_LABELS.values(), *OBSERVATION_LABELS.values(), TRACKER_START}
    # A failed render call's label is documented as its pattern.
    labels = {
        f"{label}_<code>" if label == OBSERVATION_LABELS[RpcFailed] else label for label in labels
    }
    assert sorted(label for label in labels if f"`{label}`" not in reference) == []


def test_the_flags_reference_is_current() -> None:
    reference = _flags_reference()
    assert reference.REFERENCE.read_text(encoding="utf-8") == reference.reference(), (
        "docs/flags.md is stale: run .venv/bin/python scripts/flags_reference.py"
    )
