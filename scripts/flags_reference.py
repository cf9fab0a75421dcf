"""Writes docs/flags.md: every flag of every process, from the flag tables themselves (what
``--help`` shows), so the reference cannot drift from the code. ``--check`` only says whether
the file is current (exit 1 when it is not); the tests run the same comparison.

    .venv/bin/python scripts/flags_reference.py [--check]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from export_service.__main__ import FLAGS as EXPORT_FLAGS  # noqa: E402
from gateway.__main__ import FLAGS as GATEWAY_FLAGS  # noqa: E402
from render_service.__main__ import FLAGS as RENDER_FLAGS  # noqa: E402
from videojob.flags import FlagTable  # noqa: E402

REFERENCE = REPO_ROOT / "docs" / "flags.md"

HEADER = """# Flags

Every flag of every process, with its environment variable and default: the same text as
`--help` (generated from the flag tables by `scripts/flags_reference.py`; a test fails when this
file is not current). How flags and variables combine, and the ones operators reach for first:
[`configuration.md`](configuration.md).
"""


def _launcher_flags() -> FlagTable:
    spec = importlib.util.spec_from_file_location(
        "run_stack_for_flags", REPO_ROOT / "scripts" / "run_stack.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flags: FlagTable = module.FLAGS
    return flags


def reference() -> str:
    """The text docs/flags.md must hold."""
    sections = [HEADER]
    for title, table in (
        ("Render service", RENDER_FLAGS),
        ("Export service", EXPORT_FLAGS),
        ("Gateway", GATEWAY_FLAGS),
        ("`make run` / `make run-cluster`", _launcher_flags()),
    ):
        sections.append(f"## {title}: `{table.prog}`\n\n{table.reference_table()}")
    return "\n".join(sections)


def main(argv: list[str]) -> int:
    expected = reference()
    if argv == ["--check"]:
        current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
        if current != expected:
            print(f"{REFERENCE} is stale: run scripts/flags_reference.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    REFERENCE.write_text(expected, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
