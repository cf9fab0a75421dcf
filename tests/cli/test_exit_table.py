"""The exit statuses are documented where people look: ``videojob --help`` and docs/cli.md."""

from __future__ import annotations

import io
import re

import pytest

from tests.support.processes import REPO_ROOT
from videojob_cli import run
from videojob_cli.exit_status import ExitStatus

_TABLE_ROW = re.compile(r"^\| (\d+) \| ", re.MULTILINE)


def test_help_lists_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"], out=io.StringIO()) == ExitStatus.OK
    shown = capsys.readouterr().out
    table = shown[shown.index("exit statuses:") :]
    listed = {int(number) for number in re.findall(r"^\s+(\d+)  ", table, re.MULTILINE)}
    assert listed == {int(status) for status in ExitStatus}


def test_the_cli_docs_list_every_exit_status() -> None:
    cli_docs = (REPO_ROOT / "docs" / "cli.md").read_text()
    listed = {int(number) for number in _TABLE_ROW.findall(cli_docs)}
    assert listed == {int(status) for status in ExitStatus}


def test_a_subcommand_help_ends_with_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["watch", "--help"]) == ExitStatus.OK
    assert "130  interrupted" in capsys.readouterr().out
