"""What a service imports only when its deployment uses it, so that each process (the suite
starts hundreds) starts that much faster:
- the object store's client (aiobotocore, aiohttp, botocore: about half of a service's
  start-up imports), only with an object store;
- asyncpg, only on PostgreSQL;
- structlog (which imports rich, and rich pygments and attrs), only for JSON logs."""

from __future__ import annotations

import subprocess
import sys

import pytest

LOADED_ONLY_WHEN_USED = ("aiobotocore", "aiohttp", "botocore", "asyncpg", "structlog", "rich")


@pytest.mark.parametrize(
    "module", ["export_service.__main__", "render_service.__main__", "gateway.__main__"]
)
def test_a_service_on_local_files_sqlite_and_text_logs_loads_none_of_them(module: str) -> None:
    script = (
        f"import sys, {module}; "
        f"print(','.join(m for m in {LOADED_ONLY_WHEN_USED!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == ""
