"""``submit --notify-url/--notify-events``: the endpoint the CLI asks for, and its secret printed
once (a line of its own, or the job object's ``notifySecret`` with ``--json``), against a
scripted export service (grpcio-testing); and against a real stack, a receiver that verifies the
event with the printed secret (``standardwebhooks``), and a private destination refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from tests.cli.export_double import CliRun, domain_error_trailers, job
from tests.cli.test_cli_stack import COMMAND_TIMEOUT_SECONDS, SCRIPT, TINY_PATTERN, json_lines
from tests.support.polling import wait_until
from tests.support.webhook_receiver import WebhookReceiver
from videojob.errors import InvalidArgument
from videojob.export.v1 import export_pb2
from videojob_cli.exit_status import ExitStatus
from videojob_launcher import Role, Stack, StackConfig

SECRET = "whsec_" + "A" * 43 + "="
PATTERN = ["--duration", "1", "--width", "160", "--height", "120", "--fps", "10"]


def created(version: int = 1) -> export_pb2.VideoJob:
    return job(version, export_pb2.QUEUED, stage="Queued", notify_secret=SECRET)


def test_submit_asks_for_the_endpoint_and_prints_its_secret_once() -> None:
    cli = CliRun(["submit", *PATTERN, "--notify-url", "https://hooks.example.com/v"])
    request, rpc = cli.take_unary("CreateExport")
    assert request.notify.url == "https://hooks.example.com/v"
    assert request.notify.events == export_pb2.WEBHOOK_EVENTS_TERMINAL
    rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.OK
    job_line, secret_line = cli.lines()
    assert job_line.split()[:3] == ["job-1", "v1", "queued"]
    assert secret_line == f"notify secret: {SECRET}"
    assert cli.out.getvalue().count(SECRET) == 1


def test_submit_json_has_the_secret_in_the_job_object() -> None:
    cli = CliRun(["submit", *PATTERN, "--notify-url", "http://h.example/", "--json"])
    _request, rpc = cli.take_unary("CreateExport")
    rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.OK
    (line,) = cli.lines()
    assert json.loads(line)["notifySecret"] == SECRET


def test_submit_wait_json_puts_the_secret_in_the_first_change_only() -> None:
    cli = CliRun(
        [
            *("submit", *PATTERN, "--notify-url", "http://h.example/"),
            *("--notify-events", "all", "--wait", "--json"),
        ]
    )
    request, rpc = cli.take_unary("CreateExport")
    assert request.notify.events == export_pb2.WEBHOOK_EVENTS_STATUS_CHANGES
    rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    _watch, stream = cli.take_watch()
    stream.send_response(job(1, export_pb2.QUEUED, stage="Queued"))
    stream.send_response(job(2, export_pb2.CANCELLED, 0.0, "Queued"))
    stream.terminate((), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.JOB_CANCELLED
    first, last = [json.loads(line) for line in cli.lines()]
    assert (first["version"], first["notifySecret"]) == (1, SECRET)
    assert last["version"] == 2 and "notifySecret" not in last


def test_submit_wait_prints_the_secret_before_following() -> None:
    cli = CliRun(["submit", *PATTERN, "--notify-url", "http://h.example/", "--wait"])
    _request, rpc = cli.take_unary("CreateExport")
    rpc.terminate(created(), (), grpc.StatusCode.OK, "")
    _watch, stream = cli.take_watch()
    stream.send_response(job(2, export_pb2.CANCELLED, 0.0, "Queued"))
    stream.terminate((), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.JOB_CANCELLED
    secret_line, job_line = cli.lines()
    assert secret_line == f"notify secret: {SECRET}"
    assert job_line.split()[1:3] == ["v2", "cancelled"]


def test_a_refused_destination_is_a_usage_error_naming_the_field() -> None:
    cli = CliRun(["submit", *PATTERN, "--notify-url", "http://10.0.0.1/hook"])
    _request, rpc = cli.take_unary("CreateExport")
    code, details, trailers = domain_error_trailers(
        InvalidArgument("notify.url", "resolves to a private address (10.0.0.1)")
    )
    rpc.terminate(export_pb2.VideoJob(), trailers, code, details)
    assert cli.exit_status() == ExitStatus.USAGE
    assert "notify.url: resolves to a private address" in cli.err.getvalue()


@pytest.mark.parametrize(
    "flags",
    [
        ["--notify-events", "all"],  # without --notify-url
        ["--notify-url", "ftp://h.example/"],
        ["--notify-url", "http://h.example/", "--notify-events", "some"],
    ],
)
def test_notify_flags_are_checked_before_any_call(flags: list[str]) -> None:
    cli = CliRun(["submit", *PATTERN, *flags])
    assert cli.exit_status() == ExitStatus.USAGE
    assert cli.lines() == []


# --- a real stack --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_hooks_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("cli-notify-stack")
    config = StackConfig(workdir, export=Role(args=("--webhook-allow-private",)), gateway=Role(0))
    with Stack(config) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    started = await WebhookReceiver().start()
    yield started
    await started.stop()


def videojob(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args, "--export-addr", stack.export_addr],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


async def test_the_printed_secret_verifies_the_delivered_event(
    private_hooks_stack: Stack, receiver: WebhookReceiver
) -> None:
    result = await asyncio.to_thread(
        videojob,
        private_hooks_stack,
        "submit",
        *TINY_PATTERN,
        "--notify-url",
        receiver.url,
        "--wait",
        "--json",
    )
    assert result.returncode == ExitStatus.OK, result.stderr
    changes = json_lines(result)
    secret = changes[0]["notifySecret"]
    assert all("notifySecret" not in change for change in changes[1:])

    async def arrived() -> bool:
        return len(receiver.received) >= 1

    await wait_until(arrived, "the terminal event at the receiver")
    event = receiver.received[0].verified(secret)
    assert event.get_type() == "dev.videojob.export.completed"
    assert event.get_subject() == changes[-1]["id"]
    got = await asyncio.to_thread(videojob, private_hooks_stack, "get", changes[-1]["id"], "--json")
    assert secret not in got.stdout


def test_a_private_destination_is_refused_by_a_stack_that_does_not_allow_it(
    tmp_path: Path,
) -> None:
    with Stack(StackConfig(tmp_path, gateway=Role(0))) as stack:
        result = videojob(stack, "submit", *TINY_PATTERN, "--notify-url", "http://127.0.0.1:9/h")
    assert result.returncode == ExitStatus.USAGE, result.stderr
    assert "notify.url" in result.stderr
    assert result.stdout == ""
