"""The flag tables of the three processes (videojob.flags): where a value comes from, the
ranges, and how a bad value ends the process (status 2, one line naming the flag)."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from export_service.__main__ import FLAGS as EXPORT_FLAGS
from export_service.__main__ import config_from_flags as export_config
from gateway.__main__ import FLAGS as GATEWAY_FLAGS
from gateway.__main__ import settings_from_flags
from render_service.__main__ import FLAGS as RENDER_FLAGS
from render_service.__main__ import config_from_flags as render_config
from tests.support.processes import REPO_ROOT
from videojob.flags import (
    BOOLEAN,
    EXIT_USAGE,
    Flag,
    FlagError,
    FlagTable,
    integer,
    listen_address,
    log_level_flag,
    number,
    text,
)

TABLES = {"render_service": RENDER_FLAGS, "export_service": EXPORT_FLAGS, "gateway": GATEWAY_FLAGS}

# Variables that were read before the flags had one table; each keeps its meaning.
NAMES_IN_USE = {
    "render_service": [
        "RENDER_LISTEN", "RENDER_OUTPUT_DIR", "RENDER_MEDIA_ROOT", "RENDER_MAX_CONCURRENT",
        "RENDER_MAX_QUEUE", "RENDER_STALL_TIMEOUT", "RENDER_RETENTION", "RENDER_TLS_CERT",
        "RENDER_TLS_KEY", "RENDER_TLS_CLIENT_CA", "RENDER_LOG_LEVEL",
    ],
    "export_service": [
        "EXPORT_LISTEN", "EXPORT_RENDER_ADDR", "EXPORT_DATABASE", "EXPORT_STALL_TIMEOUT",
        "EXPORT_MAX_ATTEMPTS", "EXPORT_RETRY_BUDGET", "EXPORT_OUTPUT_WAIT",
        "EXPORT_PROGRESS_INTERVAL", "EXPORT_MAX_ACTIVE_JOBS", "EXPORT_BACKOFF_INITIAL",
        "EXPORT_BACKOFF_MAX", "EXPORT_SHUTDOWN_GRACE", "EXPORT_TLS_CERT", "EXPORT_TLS_KEY",
        "EXPORT_TLS_CLIENT_CA", "EXPORT_RENDER_TLS_CA", "EXPORT_RENDER_TLS_CERT",
        "EXPORT_RENDER_TLS_KEY", "EXPORT_LOG_LEVEL",
    ],
    "gateway": [
        "GATEWAY_LISTEN", "GATEWAY_EXPORT_ADDR", "GATEWAY_EXPORT_TLS_CA",
        "GATEWAY_EXPORT_TLS_CERT", "GATEWAY_EXPORT_TLS_KEY", "GATEWAY_API_TOKEN",
        "GATEWAY_CORS_ORIGIN", "GATEWAY_MAX_BODY_BYTES", "GATEWAY_HEARTBEAT_SECONDS",
        "GATEWAY_RPC_TIMEOUT_SECONDS", "GATEWAY_UPSTREAM_RETRY_SECONDS", "GATEWAY_ACCESS_LOG",
        "GATEWAY_LOG_LEVEL",
    ],
}  # fmt: skip

SAMPLE = FlagTable(
    prog="python -m sample",
    env_prefix="SAMPLE_",
    description="A table for the tests.",
    flags=(
        Flag("--listen", listen_address(), "127.0.0.1:1", "where"),
        Flag("--interval", number(above=0), 1.5, "how often"),
        Flag("--attempts", integer(minimum=1, maximum=9), 3, "how many"),
        Flag("--origin", text(), (), "who", repeatable=True),
        Flag("--verbose", BOOLEAN, False, "say more"),
        Flag("--cert", text(), None, "certificate", requires=("--key",)),
        Flag("--key", text(), None, "key", requires=("--cert",)),
        log_level_flag(),
    ),
)


def parse(argv: list[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    return SAMPLE.parse(argv, environ or {})


def test_the_command_line_wins_over_the_environment_and_the_environment_over_the_default() -> None:
    assert parse([]).interval == 1.5
    assert parse([], {"SAMPLE_INTERVAL": "2.5"}).interval == 2.5
    assert parse(["--interval", "4"], {"SAMPLE_INTERVAL": "2.5"}).interval == 4.0
    # An empty variable counts as unset.
    assert parse([], {"SAMPLE_INTERVAL": ""}).interval == 1.5
    # Another service's prefix is not this one's.
    assert parse([], {"OTHER_INTERVAL": "abc"}).interval == 1.5


def test_repeatable_booleans_and_choices() -> None:
    assert parse([]).origin == ()
    assert parse([], {"SAMPLE_ORIGIN": "a, b,,"}).origin == ("a", "b")
    assert parse(["--origin", "x", "--origin", "y"], {"SAMPLE_ORIGIN": "a"}).origin == ("x", "y")
    assert parse([]).verbose is False
    assert parse([], {"SAMPLE_VERBOSE": "yes"}).verbose is True
    assert parse(["--no-verbose"], {"SAMPLE_VERBOSE": "1"}).verbose is False
    assert parse(["--verbose"]).verbose is True
    assert parse(["--log-level", "debug"]).log_level == "DEBUG"
    assert parse([], {"SAMPLE_LOG_LEVEL": "warning"}).log_level == "WARNING"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--interval", "0"], "--interval must be a number > 0, not '0'"),
        (["--interval", "-1"], "--interval must be a number > 0, not '-1'"),
        (["--interval", "nan"], "--interval must be a number > 0, not 'nan'"),
        (["--interval", "soon"], "--interval must be a number > 0, not 'soon'"),
        (["--attempts", "0"], "--attempts must be an integer from 1 to 9, not '0'"),
        (["--attempts", "10"], "--attempts must be an integer from 1 to 9, not '10'"),
        (["--attempts", "2.5"], "--attempts must be an integer from 1 to 9, not '2.5'"),
        (["--listen", "h:65536"], "--listen must be HOST:PORT with a port from 0 to 65535"),
        (["--listen", "8080"], "--listen must be HOST:PORT"),
        (["--log-level", "loud"], "--log-level must be one of DEBUG, INFO"),
        (["--origin", ""], "--origin must be a non-empty text, not ''"),
        (["--cert", "c.pem"], "--cert needs --key too"),
        (["--interval"], "argument --interval: expected one argument"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_a_bad_command_line_value_names_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as error:
        parse(argv)
    assert message in error.value.message


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SAMPLE_INTERVAL": "abc"}, "--interval (from SAMPLE_INTERVAL) must be a number > 0"),
        ({"SAMPLE_ATTEMPTS": "-3"}, "--attempts (from SAMPLE_ATTEMPTS) must be an integer"),
        ({"SAMPLE_VERBOSE": "maybe"}, "--verbose (from SAMPLE_VERBOSE) must be one of 1, true"),
        ({"SAMPLE_CERT": "c.pem"}, "--cert (from SAMPLE_CERT) needs --key too"),
    ],
)
def test_a_bad_environment_value_names_the_flag_and_the_variable(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(FlagError) as error:
        parse([], environ)
    assert message in error.value.message


def test_a_bad_environment_value_is_not_read_when_the_flag_is_given() -> None:
    assert parse(["--interval", "2"], {"SAMPLE_INTERVAL": "abc"}).interval == 2.0


def test_parse_or_exit_ends_with_status_2_and_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        SAMPLE.parse_or_exit(["--interval", "-1"], {})
    assert exit_info.value.code == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "python -m sample: --interval must be a number > 0, not '-1'"
    ]


@pytest.mark.parametrize("service", TABLES)
def test_every_variable_in_use_keeps_its_name(service: str) -> None:
    table = TABLES[service]
    names = {table.env_name(flag) for flag in table.flags}
    assert set(NAMES_IN_USE[service]) <= names
    for flag in table.flags:
        expected = table.env_prefix + flag.name.removeprefix("--").upper().replace("-", "_")
        assert table.env_name(flag) == expected


@pytest.mark.parametrize("service", TABLES)
def test_every_default_is_within_its_own_range(service: str) -> None:
    table = TABLES[service]
    for flag in table.flags:
        defaults = flag.default if flag.repeatable else (flag.default,)
        for default in defaults:
            if default is not None:
                assert flag.kind.accepts(default), flag.name
                # The default is what the flag would parse to, type included.
                parsed = flag.kind.convert(str(default))
                assert (parsed, type(parsed)) == (default, type(default)), flag.name
    # With nothing given every process starts from its defaults.
    assert table.parse([], {}) is not None


@pytest.mark.parametrize(
    ("table", "argv", "flag"),
    [
        (EXPORT_FLAGS, ["--stall-timeout", "-1"], "--stall-timeout"),
        (EXPORT_FLAGS, ["--stall-timeout", "0"], "--stall-timeout"),
        (EXPORT_FLAGS, ["--max-attempts", "0"], "--max-attempts"),
        (EXPORT_FLAGS, ["--max-active-jobs", "0"], "--max-active-jobs"),
        (EXPORT_FLAGS, ["--max-pixel-rate", "0"], "--max-pixel-rate"),
        (EXPORT_FLAGS, ["--retry-budget", "-1"], "--retry-budget"),
        (EXPORT_FLAGS, ["--release-budget", "-1"], "--release-budget"),
        (EXPORT_FLAGS, ["--release-budget", "inf"], "--release-budget"),
        (EXPORT_FLAGS, ["--output-wait", "-1"], "--output-wait"),
        (EXPORT_FLAGS, ["--progress-interval", "-0.1"], "--progress-interval"),
        (EXPORT_FLAGS, ["--backoff-initial", "0"], "--backoff-initial"),
        (EXPORT_FLAGS, ["--listen", "127.0.0.1:99999"], "--listen"),
        (EXPORT_FLAGS, ["--render-addr", "127.0.0.1:0"], "--render-addr"),
        (EXPORT_FLAGS, ["--tls-client-ca", "ca.pem"], "--tls-client-ca"),
        (RENDER_FLAGS, ["--max-concurrent", "0"], "--max-concurrent"),
        (RENDER_FLAGS, ["--max-queue", "-1"], "--max-queue"),
        (RENDER_FLAGS, ["--stall-timeout", "0"], "--stall-timeout"),
        (RENDER_FLAGS, ["--retention", "-1"], "--retention"),
        (RENDER_FLAGS, ["--tls-key", "key.pem"], "--tls-key"),
        (RENDER_FLAGS, ["--log-level", "chatty"], "--log-level"),
        (GATEWAY_FLAGS, ["--heartbeat-seconds", "0"], "--heartbeat-seconds"),
        (GATEWAY_FLAGS, ["--rpc-timeout-seconds", "-2"], "--rpc-timeout-seconds"),
        (GATEWAY_FLAGS, ["--max-body-bytes", "0"], "--max-body-bytes"),
        (GATEWAY_FLAGS, ["--upstream-retry-seconds", "-1"], "--upstream-retry-seconds"),
        (GATEWAY_FLAGS, ["--listen", "localhost:-1"], "--listen"),
        (GATEWAY_FLAGS, ["--export-tls-cert", "cert.pem"], "--export-tls-cert"),
    ],
)
def test_the_services_check_their_ranges(table: FlagTable, argv: list[str], flag: str) -> None:
    with pytest.raises(FlagError) as error:
        table.parse(argv, {})
    assert error.value.message.startswith(f"{flag} ")


def test_flags_become_the_render_config() -> None:
    flags = RENDER_FLAGS.parse(
        ["--max-concurrent", "2", "--output-dir", "out"],
        {"RENDER_STALL_TIMEOUT": "7", "RENDER_TLS_CERT": "c.pem", "RENDER_TLS_KEY": "k.pem"},
    )
    config = render_config(flags)
    assert config.max_concurrent == 2
    assert config.output_dir == Path("out")
    assert config.media_root == Path("./var/media")
    assert config.stall_timeout == 7.0
    assert (config.tls.cert, config.tls.key, config.tls.ca) == (Path("c.pem"), Path("k.pem"), None)


def test_flags_become_the_export_config() -> None:
    flags = EXPORT_FLAGS.parse(
        ["--max-attempts", "2"], {"EXPORT_STALL_TIMEOUT": "3", "EXPORT_RELEASE_BUDGET": "45"}
    )
    config = export_config(flags)
    assert config.tracker.max_attempts == 2
    assert config.tracker.stall_timeout == 3.0
    assert config.tracker.release_budget == 45.0
    # Unset, a superseded render's release is given up after minutes, never retried forever.
    assert 60 <= export_config(EXPORT_FLAGS.parse([], {})).tracker.release_budget < math.inf
    # Unset, the output wait follows the stall timeout.
    assert config.tracker.output_wait is None
    assert config.tracker.output_wait_seconds == 10.0
    assert not config.tls.enabled


def test_flags_become_the_gateway_settings() -> None:
    flags = GATEWAY_FLAGS.parse(
        ["--cors-origin", "https://a.example"],
        {"GATEWAY_API_TOKEN": "secret", "GATEWAY_ACCESS_LOG": "on", "GATEWAY_CORS_ORIGIN": "x"},
    )
    settings = settings_from_flags(flags)
    assert settings.api_token == "secret"
    assert settings.cors_origins == ("https://a.example",)
    assert flags.access_log is True
    assert settings_from_flags(GATEWAY_FLAGS.parse([], {})).api_token is None


# The processes themselves.


def run_module(
    module: str, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # Only what Python needs, so that no variable of the machine running the tests leaks in.
    base = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**base, "COLUMNS": "100", **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "argv", "env", "line"),
    [
        (
            "export_service",
            ["--stall-timeout", "-1"],
            {},
            "python -m export_service: --stall-timeout must be a number > 0, not '-1'",
        ),
        (
            "export_service",
            [],
            {"EXPORT_STALL_TIMEOUT": "abc"},
            "python -m export_service: --stall-timeout (from EXPORT_STALL_TIMEOUT) "
            "must be a number > 0, not 'abc'",
        ),
        (
            "render_service",
            [],
            {"RENDER_LOG_LEVEL": "loud"},
            "python -m render_service: --log-level (from RENDER_LOG_LEVEL) must be one of "
            "DEBUG, INFO, WARNING, ERROR, CRITICAL, not 'loud'",
        ),
        (
            "gateway",
            ["--listen", "127.0.0.1:70000"],
            {},
            "python -m gateway: --listen must be HOST:PORT with a port from 0 to 65535, "
            "not '127.0.0.1:70000'",
        ),
    ],
)
def test_a_bad_value_ends_the_process_with_status_2_and_one_line(
    module: str, argv: list[str], env: dict[str, str], line: str
) -> None:
    result = run_module(module, *argv, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""


@pytest.mark.parametrize("service", TABLES)
def test_help_shows_every_variable_and_default_the_same_way(service: str) -> None:
    table = TABLES[service]
    result = run_module(service, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    help_text = " ".join(result.stdout.split())
    assert "--log-level" in help_text
    for flag in table.flags:
        assert flag.name in help_text
        shown_default = flag.default_text or (
            "unset" if flag.default in (None, ()) else
            ("on" if flag.default else "off") if flag.kind is BOOLEAN else str(flag.default)
        )  # fmt: skip
        assert f"[env {table.env_name(flag)}; default {shown_default}]" in help_text
