"""The services refuse to start on an s3:// output location they cannot use: wrong credentials
or a missing bucket end the process with status 2 and one line naming the flag or variable to
fix. Real processes, a real SeaweedFS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.seaweedfs import SeaweedFS
from videojob.flags import EXIT_USAGE

pytestmark = pytest.mark.object_store

START_TIMEOUT_SECONDS = 60


def refusal(module: str, args: list[str], environ: dict[str, str], cwd: Path) -> str:
    """Runs ``python -m module args``; asserts it exits 2 and returns its one line of stderr."""
    run = subprocess.run(
        [sys.executable, "-m", module, "--listen", "127.0.0.1:0", *args],
        env={"PATH": "/usr/bin:/bin", **environ},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )
    assert run.returncode == EXIT_USAGE, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


def test_the_render_service_refuses_a_wrong_secret_key(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    environ = {**seaweedfs.environ(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    args = ["--output-dir", str(seaweedfs.location("out")), "--scratch-dir", str(tmp_path)]
    line = refusal("render_service", args, environ, tmp_path)
    assert line.startswith("render_service: cannot start: AWS_SECRET_ACCESS_KEY: "), line


def test_the_render_service_refuses_a_missing_bucket(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    args = ["--output-dir", "s3://no-such-bucket/out", "--scratch-dir", str(tmp_path)]
    line = refusal("render_service", args, seaweedfs.environ(), tmp_path)
    assert line.startswith("render_service: cannot start: --output-dir: bucket "), line
    assert "'no-such-bucket' does not exist" in line, line


def test_the_export_service_refuses_a_missing_bucket(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    args = [
        "--render-output-dir",
        "s3://no-such-bucket/out",
        "--database",
        f"sqlite:///{tmp_path / 'export.db'}",
    ]
    line = refusal("export_service", args, seaweedfs.environ(), tmp_path)
    assert line.startswith("export_service: cannot start: --render-output-dir: bucket "), line


def test_the_gateway_refuses_an_unknown_access_key(seaweedfs: SeaweedFS, tmp_path: Path) -> None:
    environ = {**seaweedfs.environ(), "AWS_ACCESS_KEY_ID": "nobody"}
    args = ["--render-output-dir", str(seaweedfs.location("out"))]
    line = refusal("gateway", args, environ, tmp_path)
    assert line.startswith("gateway: cannot start: AWS_ACCESS_KEY_ID: "), line
