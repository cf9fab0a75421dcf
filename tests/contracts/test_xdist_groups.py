"""The suite's xdist groups take effect: a pytest run on two workers with this suite's collection
hook sends the tests marked ``serial`` to one worker (those naming a group of their own to one
worker too), and the tests sharing a module-scoped
fixture to one worker. (pytest 9.2 made pytest-xdist's ``--dist loadgroup`` ignore every group
without a word: pytest-dev/pytest-xdist#1386.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]

CONFTEST = """
import pytest

from tests.conftest import pytest_collection_modifyitems as pytest_collection_modifyitems


def pytest_configure(config):
    config.addinivalue_line("markers", "serial: one after the other")
"""

TESTS = """
import pytest


@pytest.fixture(scope="module")
def shared():
    return object()


@pytest.mark.serial
@pytest.mark.parametrize("n", range(4))
def test_serial(n):
    pass


@pytest.mark.serial("serial:apart")
@pytest.mark.parametrize("n", range(3))
def test_serial_in_a_named_group(n):
    pass


@pytest.mark.parametrize("n", range(4))
def test_shares_a_module_fixture(n, shared):
    pass


@pytest.mark.parametrize("n", range(8))
def test_free(n):
    pass
"""


def test_serial_tests_and_module_fixture_users_each_run_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_grouped.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
         "-p", "no:cacheprovider", "-p", "xdist.plugin", str(tmp_path)],
        cwd=tmp_path,
        # xdist alone: the installed plugins (hypothesis, schemathesis...) would triple the
        # CPU of each of its three processes.
        env={**os.environ, "PYTHONPATH": str(PROJECT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    workers: defaultdict[str, set[str]] = defaultdict(set)
    for worker, test in re.findall(r"\[(gw\d)\] .*PASSED \S+::(test_\w+)", run.stdout):
        workers[test].add(worker)
    assert sum(line.count("PASSED") for line in run.stdout.splitlines()) == 19, run.stdout
    assert len(workers["test_serial"]) == 1, run.stdout
    assert len(workers["test_serial_in_a_named_group"]) == 1, run.stdout
    assert len(workers["test_shares_a_module_fixture"]) == 1, run.stdout
    assert "@serial" in run.stdout and "@module:test_grouped" in run.stdout, run.stdout
    assert "@serial:apart" in run.stdout, run.stdout


def test_every_test_folder_has_its_place_in_the_run_order() -> None:
    """A folder missing from ``FOLDERS_SLOWEST_FIRST`` would run last whatever its tests'
    length; one listed but gone is a stale entry."""
    from tests.conftest import FOLDERS_SLOWEST_FIRST

    tests = PROJECT / "tests"
    folders = {path.parent.relative_to(tests).parts[0] for path in tests.rglob("test_*.py")}
    assert folders == set(FOLDERS_SLOWEST_FIRST)
    assert len(FOLDERS_SLOWEST_FIRST) == len(set(FOLDERS_SLOWEST_FIRST))
