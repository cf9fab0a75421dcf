"""The ``videojob`` CLI against a real stack (render service, export service and
gateway as processes on port 0): exit statuses, piped and JSON output, get/list/cancel, and a
download that is a valid video."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.media import media_duration
from tests.support.paced_ffmpeg import PACED_SIZE, write_paced_ffmpeg
from tests.support.ports import unused_address
from videojob.output_check import DURATION_TOLERANCE_SECONDS
from videojob_cli.exit_status import ExitStatus
from videojob_cli.main import run
from videojob_launcher import Role, Stack, StackConfig

SCRIPT = Path(sys.executable).with_name("videojob")
COMMAND_TIMEOUT_SECONDS = 90
TINY_PATTERN = ("--duration", "1", "--width", "160", "--height", "120", "--fps", "10")
# Rendered at the speed of playback: it runs until the test cancels it.
LONG_PATTERN = (
    *("--duration", "3600", "--fps", "10"),
    *("--width", str(PACED_SIZE[0]), "--height", str(PACED_SIZE[1])),
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("cli-stack")
    render = Role(env={"FFMPEG_BINARY": str(write_paced_ffmpeg(workdir, 1.0))})
    with Stack(StackConfig(workdir, render=render)) as running:
        yield running


def videojob(stack: Stack, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs a command as the script does (``videojob_cli.main.run``), in this process, with its
    output piped, as a script or a log would have it (the script itself runs in
    test_unknown_ids_and_unreachable_services_have_their_own_status)."""
    argv = [*args, "--export-addr", stack.export_addr]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        status = run(argv, out=out, err=err)
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


def json_lines(result: subprocess.CompletedProcess[str]) -> list[Any]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def submit_long(stack: Stack) -> str:
    created = videojob(stack, "submit", *LONG_PATTERN, "--preset", "ultrafast", "--json")
    assert created.returncode == ExitStatus.OK, created.stderr
    (job,) = json_lines(created)
    return str(job["id"])


@pytest.fixture(scope="module")
def completed_job(stack: Stack) -> Any:
    result = videojob(stack, "submit", *TINY_PATTERN, "--preset", "ultrafast", "--wait", "--json")
    assert result.returncode == ExitStatus.OK, result.stderr
    changes = json_lines(result)
    versions = [change["version"] for change in changes]
    assert versions == sorted(set(versions)), versions
    assert changes[-1]["status"] == "completed"
    return changes[-1]


def test_submit_wait_exits_0_with_one_json_object_per_change(completed_job: Any) -> None:
    assert completed_job["progress"] == 100
    assert Path(completed_job["outputPath"]).is_file()


def test_piped_submit_wait_prints_one_line_per_change(stack: Stack) -> None:
    result = videojob(stack, "submit", *TINY_PATTERN, "--preset", "ultrafast", "--wait")
    assert result.returncode == ExitStatus.OK, result.stderr
    lines = result.stdout.splitlines()
    job_id = lines[0].split()[0]
    assert all(line.split()[0] == job_id for line in lines)
    # One line per change: each names a version of its own, in order.
    versions = [int(line.split()[1].removeprefix("v")) for line in lines]
    assert versions == sorted(set(versions)), lines
    assert lines[-1].split()[2:5] == ["completed", "100.0%", "Complete"]
    got = videojob(stack, "get", job_id, "--json")
    assert got.returncode == ExitStatus.OK, got.stderr
    (job,) = json_lines(got)
    assert versions[-1] == job["version"]


def test_get_list_cancel_and_watch_of_a_cancelled_job(stack: Stack) -> None:
    job_id = submit_long(stack)
    got = videojob(stack, "get", job_id)
    assert got.returncode == ExitStatus.OK, got.stderr
    assert f"id: {job_id}" in got.stdout.splitlines()
    assert "retrying: false" in got.stdout.splitlines()

    listed = videojob(stack, "list", "--limit", "5", "--json")
    assert listed.returncode == ExitStatus.OK, listed.stderr
    assert job_id in [job["id"] for job in json_lines(listed)]

    cancelled = videojob(stack, "cancel", job_id, "--json")
    assert cancelled.returncode == ExitStatus.OK, cancelled.stderr
    assert json_lines(cancelled)[0]["status"] == "cancelled"

    watched = videojob(stack, "watch", job_id)
    assert watched.returncode == ExitStatus.JOB_CANCELLED, watched.stderr
    assert watched.stdout.split()[2] == "cancelled"

    listed = videojob(stack, "list", "--status", "cancelled", "--json")
    assert job_id in [job["id"] for job in json_lines(listed)]
    again = videojob(stack, "cancel", job_id, "--json")  # idempotent: the job, unchanged
    assert again.returncode == ExitStatus.OK, again.stderr
    assert json_lines(again)[0]["version"] == json_lines(cancelled)[0]["version"]
    refused = videojob(stack, "download", job_id, "--gateway-url", stack.url)
    assert refused.returncode == ExitStatus.REFUSED, refused.stderr


def test_download_writes_the_video(stack: Stack, completed_job: Any, tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    result = videojob(
        stack, "download", completed_job["id"], "-o", str(target), "--gateway-url", stack.url
    )
    assert result.returncode == ExitStatus.OK, result.stderr
    assert target.stat().st_size == completed_job["outputSizeBytes"]
    assert abs(media_duration(target) - 1.0) <= DURATION_TOLERANCE_SECONDS
    assert not list(tmp_path.glob(".*.part"))

    default_name = videojob(
        stack, "download", completed_job["id"], "--gateway-url", stack.url, cwd=tmp_path
    )
    assert default_name.returncode == ExitStatus.OK, default_name.stderr
    assert (tmp_path / f"{completed_job['id']}.mp4").read_bytes() == target.read_bytes()

    # The file is there now: kept unless --force, which replaces it whole.
    target.write_bytes(b"mine")
    for command in (
        ("download", completed_job["id"], "-o", str(target)),
        ("download", completed_job["id"]),
    ):
        kept = videojob(stack, *command, "--gateway-url", stack.url, cwd=tmp_path)
        assert kept.returncode == ExitStatus.REFUSED, kept.stderr
        assert "exists" in kept.stderr
    assert target.read_bytes() == b"mine"
    forced = videojob(
        stack, "download", completed_job["id"], "-o", str(target), "--force", "--gateway-url",
        stack.url,
    )  # fmt: skip
    assert forced.returncode == ExitStatus.OK, forced.stderr
    assert target.stat().st_size == completed_job["outputSizeBytes"]
    assert not list(tmp_path.glob(".*.part"))


def test_history_then_delete_of_a_finished_job(stack: Stack) -> None:
    created = videojob(stack, "submit", *TINY_PATTERN, "--preset", "ultrafast", "--wait", "--json")
    assert created.returncode == ExitStatus.OK, created.stderr
    finished = json_lines(created)[-1]
    job_id = finished["id"]

    history = videojob(stack, "history", job_id, "--json")
    assert history.returncode == ExitStatus.OK, history.stderr
    entries = json_lines(history)
    assert [entry["version"] for entry in entries] == list(range(1, finished["version"] + 1))
    assert entries[0]["change"] == "create" and entries[-1]["change"] == "complete"
    lines = videojob(stack, "history", job_id).stdout.splitlines()
    assert len(lines) == len(entries)
    assert lines[-1].split()[0] == f"v{finished['version']}" and " complete " in lines[-1]

    deleted = videojob(stack, "delete", job_id)
    assert deleted.returncode == ExitStatus.OK, deleted.stderr
    assert deleted.stdout.strip() == f"{job_id} deleted"
    assert not Path(finished["outputPath"]).exists()
    for command in ("get", "history", "delete"):
        gone = videojob(stack, command, job_id)
        assert gone.returncode == ExitStatus.NOT_FOUND, (command, gone.stderr)


def test_a_running_job_cannot_be_deleted(stack: Stack) -> None:
    job_id = submit_long(stack)
    refused = videojob(stack, "delete", job_id)
    assert refused.returncode == ExitStatus.REFUSED, refused.stderr
    assert "cannot be deleted" in refused.stderr
    cancelled = videojob(stack, "cancel", job_id)
    assert cancelled.returncode == ExitStatus.OK, cancelled.stderr


def test_unknown_ids_and_unreachable_services_have_their_own_status(
    stack: Stack, completed_job: Any, tmp_path: Path
) -> None:
    unknown = "0" * 32
    for command in ("get", "watch", "cancel"):
        result = videojob(stack, command, unknown)
        assert result.returncode == ExitStatus.NOT_FOUND, (command, result.stderr)

    nowhere = unused_address()
    unreachable = subprocess.run(
        [str(SCRIPT), "list", "--export-addr", nowhere],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    assert unreachable.returncode == ExitStatus.UNREACHABLE, unreachable.stderr
    assert nowhere in unreachable.stderr

    no_gateway = videojob(
        stack,
        "download",
        completed_job["id"],
        "-o",
        str(tmp_path / "x.mp4"),
        "--gateway-url",
        f"http://{unused_address()}",
    )
    assert no_gateway.returncode == ExitStatus.GATEWAY, no_gateway.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_usage_errors_exit_2(stack: Stack) -> None:
    for args in (
        ("submit", "--duration", "1", "--width", "161", "--height", "120"),
        ("submit", "--spec", "-", "--duration", "1"),
        ("list", "--limit", "0"),
        ("list", "--status", "lost"),
        ("frobnicate",),
    ):
        result = videojob(stack, *args)
        assert result.returncode == ExitStatus.USAGE, (args, result.stderr)
    width = videojob(stack, "submit", "--duration", "1", "--width", "161", "--height", "120")
    assert "--width" in width.stderr
