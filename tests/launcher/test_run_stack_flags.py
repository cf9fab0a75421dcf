"""scripts/run_stack.py's flags come from one table (videojob.flags), as the services' do:
each with its environment variable, its range and its help, checked the same way."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.processes import REPO_ROOT
from videojob.flags import BOOLEAN, FlagError, FlagTable

SCRIPT = REPO_ROOT / "scripts" / "run_stack.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_stack_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUN_STACK = _load_script()
FLAGS: FlagTable = RUN_STACK.FLAGS

# Variables that were read before the flags had one table; each keeps its meaning.
NAMES_IN_USE = [
    "VIDEOJOB_RENDER_LISTEN", "VIDEOJOB_EXPORT_LISTEN", "VIDEOJOB_GATEWAY_LISTEN",
    "VIDEOJOB_VAR_DIR", "VIDEOJOB_DATABASE", "VIDEOJOB_RENDERS", "VIDEOJOB_EXPORTS",
    "VIDEOJOB_GATEWAYS", "VIDEOJOB_RESTART", "VIDEOJOB_RESTART_BACKOFF",
    "VIDEOJOB_RESTART_BACKOFF_MAX", "VIDEOJOB_RESTART_BURST", "VIDEOJOB_RESTART_INTERVAL",
]  # fmt: skip


def run_script(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**base, "COLUMNS": "1000", **(env or {})},
        check=False,
    )


def test_every_variable_in_use_keeps_its_name_and_every_flag_has_help() -> None:
    names = {FLAGS.env_name(flag) for flag in FLAGS.flags}
    assert set(NAMES_IN_USE) <= names
    for flag in FLAGS.flags:
        assert flag.help.strip(), flag.name
        assert FLAGS.env_name(flag) == "VIDEOJOB_" + flag.dest.upper()


def test_every_default_is_within_its_own_range() -> None:
    for flag in FLAGS.flags:
        if flag.default is not None:
            assert flag.kind.accepts(flag.default), flag.name
            parsed = flag.kind.convert(str(flag.default))
            assert (parsed, type(parsed)) == (flag.default, type(flag.default)), flag.name
    defaults = FLAGS.parse([], {})
    assert (defaults.renders, defaults.exports, defaults.gateways) == (1, 1, 1)
    assert defaults.var_dir == Path("var")
    assert defaults.create_database is False


def test_the_command_line_wins_over_the_environment() -> None:
    environ = {"VIDEOJOB_EXPORTS": "3", "VIDEOJOB_RESTART_BURST": "2"}
    args = FLAGS.parse(["--exports", "2", "--restart", "always"], environ)
    assert (args.exports, args.restart_burst, args.restart) == (2, 2, "always")


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--renders", "-1"], {}, "--renders must be an integer >= 0, not '-1'"),
        ([], {"VIDEOJOB_EXPORTS": "many"}, "--exports (from VIDEOJOB_EXPORTS) must be an integer"),
        (["--render-listen", "50051"], {}, "--render-listen must be HOST:PORT"),
        (["--restart", "sometimes"], {}, "--restart must be one of no, on-failure, always"),
        (
            [],
            {"VIDEOJOB_STORAGE": "nfs"},
            "--storage (from VIDEOJOB_STORAGE) must be one of local, s3",
        ),
        (["--restart-interval", "0"], {}, "--restart-interval must be a number > 0"),
    ],
)
def test_a_bad_value_names_its_flag(argv: list[str], environ: dict[str, str], message: str) -> None:
    with pytest.raises(FlagError) as error:
        FLAGS.parse(argv, environ)
    assert message in error.value.message


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [
        (
            ["--gateway-listen", "127.0.0.1:70000"],
            {},
            "scripts/run_stack.py: --gateway-listen must be HOST:PORT with a port from 0 to "
            "65535, not '127.0.0.1:70000'",
        ),
        (
            [],
            {"VIDEOJOB_RESTART_BURST": "0"},
            "scripts/run_stack.py: --restart-burst (from VIDEOJOB_RESTART_BURST) must be an "
            "integer >= 1, not '0'",
        ),
        (
            ["--restart-backoff", "5", "--restart-backoff-max", "2"],
            {},
            "scripts/run_stack.py: --restart-backoff-max must be >= --restart-backoff",
        ),
    ],
)
def test_a_bad_value_ends_the_launcher_with_status_2_and_one_line(
    argv: list[str], env: dict[str, str], line: str
) -> None:
    result = run_script(*argv, env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [line]


def test_help_shows_a_whole_description_and_every_flag_with_its_variable_and_default() -> None:
    result = run_script("--help")
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())
    # The first paragraph of the script's docstring, whole (it once stopped mid-sentence).
    first_paragraph = " ".join((RUN_STACK.__doc__ or "").split("\n\n")[0].split())
    assert first_paragraph.endswith(".")
    assert first_paragraph in help_text
    for flag in FLAGS.flags:
        assert flag.name in help_text
        shown_default = flag.default_text or (
            "unset" if flag.default in (None, ()) else
            ("on" if flag.default else "off") if flag.kind is BOOLEAN else str(flag.default)
        )  # fmt: skip
        assert f"{flag.help} " in help_text or f"{flag.help};" in help_text, flag.name
        assert f"[env {FLAGS.env_name(flag)}; default {shown_default}]" in help_text
