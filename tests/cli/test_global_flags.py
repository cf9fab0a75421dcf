"""The flags every command reads (where the export service is, TLS, the deadline) are taken
before the command as well as after it: ``videojob --export-addr A list``. Given in both
places, the one after the command wins; either way each is checked once, as its flag table
says, and the environment fills in what neither gives."""

from __future__ import annotations

import io

import pytest

from tests.support.ports import unused_address
from videojob_cli import run
from videojob_cli.exit_status import ExitStatus


def videojob(argv: list[str], environ: dict[str, str] | None = None) -> tuple[int, str]:
    err = io.StringIO()
    status = run(argv, out=io.StringIO(), err=err, environ=environ or {})
    return status, err.getvalue()


def test_the_export_address_before_the_command_is_the_one_dialled() -> None:
    address = unused_address()
    status, err = videojob(["--export-addr", address, "--timeout", "1", "list"])
    assert status == ExitStatus.UNREACHABLE, err
    assert f"the export service at {address} cannot be reached" in err


def test_after_the_command_wins_and_the_command_line_wins_over_the_environment() -> None:
    before, after, from_environment = unused_address(), unused_address(), unused_address()
    status, err = videojob(
        ["--export-addr", before, "get", "job-1", "--export-addr", after, "--timeout", "1"],
        {"VIDEOJOB_EXPORT_ADDR": from_environment},
    )
    assert status == ExitStatus.UNREACHABLE, err
    assert after in err
    assert before not in err and from_environment not in err


def test_the_environment_fills_in_what_the_command_line_does_not_give() -> None:
    address = unused_address()
    status, err = videojob(["--timeout", "1", "list"], {"VIDEOJOB_EXPORT_ADDR": address})
    assert status == ExitStatus.UNREACHABLE, err
    assert address in err


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--timeout", "0", "list"], "videojob list: --timeout must be a number > 0, not '0'"),
        (
            ["--tls-cert", "client.pem", "get", "job-1"],
            "videojob get: --tls-cert needs --tls-key too",
        ),
        (
            ["--export-addr", "nowhere", "cancel", "job-1"],
            "videojob cancel: --export-addr must be HOST:PORT with a port from 1 to 65535 "
            "(or a comma-separated list of them), not 'nowhere'",
        ),
    ],
)
def test_a_bad_value_before_the_command_is_a_usage_error_naming_the_flag(
    argv: list[str], line: str
) -> None:
    status, err = videojob(argv)
    assert status == ExitStatus.USAGE
    assert err.splitlines() == [line]


def test_a_flag_only_one_command_reads_goes_after_it(capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = videojob(["--gateway-url", "http://127.0.0.1:1", "download", "job-1"])
    assert status == ExitStatus.USAGE
    assert "usage: videojob" in capsys.readouterr().err


def test_help_shows_the_flags_every_command_reads(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"], out=io.StringIO()) == ExitStatus.OK
    shown = " ".join(capsys.readouterr().out.split())
    for flag, variable in (
        ("--export-addr", "VIDEOJOB_EXPORT_ADDR"),
        ("--tls-ca", "VIDEOJOB_TLS_CA"),
        ("--tls-cert", "VIDEOJOB_TLS_CERT"),
        ("--tls-key", "VIDEOJOB_TLS_KEY"),
        ("--timeout", "VIDEOJOB_TIMEOUT"),
    ):
        assert flag in shown
        assert f"[env {variable}; default" in shown
