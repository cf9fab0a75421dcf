"""Fixtures every test folder may use: this run's PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import (
    PostgresMissing,
    create_run_database,
    drop_run_database,
    run_sync,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "postgresql: runs against PostgreSQL (the server on 127.0.0.1:5432, or a throwaway "
        "cluster); fails when PostgreSQL is absent",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/render faces FFmpeg itself (the ``ffmpeg`` marker); the tests
    marked ``serial`` form one xdist group, run one after the other on one worker."""
    render_tests = Path(__file__).parent / "render"
    for item in items:
        if render_tests in item.path.parents:
            item.add_marker(pytest.mark.ffmpeg)
        if item.get_closest_marker("serial") is not None:
            item.add_marker(pytest.mark.xdist_group("serial"))


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The URL of a database of this run on the shared server, dropped at the end. Fails (never
    skips) when PostgreSQL does not answer: it is part of the test environment."""
    try:
        url = run_sync(create_run_database())
    except PostgresMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    yield url
    run_sync(drop_run_database(url))
