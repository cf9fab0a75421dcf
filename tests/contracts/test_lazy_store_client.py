"""A process that keeps its files in local directories never loads the object store's client
(aiobotocore, aiohttp, botocore: about half of a service's start-up imports): the suite and
every deployment without an object store start each process that much faster."""

from __future__ import annotations

import subprocess
import sys

import pytest

STORE_CLIENT = ("aiobotocore", "aiohttp", "botocore")


@pytest.mark.parametrize(
    "module", ["export_service.__main__", "render_service.__main__", "gateway.__main__"]
)
def test_a_service_without_an_object_store_loads_no_store_client(module: str) -> None:
    script = (
        f"import sys, {module}; print(','.join(m for m in {STORE_CLIENT!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
