"""The ``videojob`` CLI given every export replica (``--export-addr a,b``), as an operator of a
cluster would run it: its calls go to the replicas that serve, so a SIGKILLed replica costs it
nothing, and a watch started before the kill follows the job to its end, whichever replica
it was on (its resume after a broken stream is tested in tests/cli/test_cli_protocol.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.conftest import StackFactory
from tests.support.polling import wait_until
from tests.support.throttle import Throttle
from videojob_cli.exit_status import ExitStatus
from videojob_launcher import Stack

pytestmark = pytest.mark.postgresql

SCRIPT = Path(sys.executable).with_name("videojob")
COMMAND_TIMEOUT_SECONDS = 90
LONG_PATTERN = ("--duration", "3600", "--width", "160", "--height", "120", "--fps", "10")


async def videojob(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(SCRIPT), *args, "--export-addr", stack.export_addr, "--json"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def only_object(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == ExitStatus.OK, result.stderr
    (job,) = [json.loads(line) for line in result.stdout.splitlines()]
    return job


async def test_the_cli_given_every_replica_outlives_one_of_them(cluster: StackFactory) -> None:
    stack = await cluster(exports=2)
    assert "," in stack.export_addr
    # The render must outlast the test's commands however loaded the machine: FFmpeg is held to
    # a ninth of its speed until the job is cancelled.
    with Throttle.children_of(stack.render.pid, pause=0.2):
        await _submit_kill_cancel_and_watch(stack)


async def _submit_kill_cancel_and_watch(stack: Stack) -> None:
    job = only_object(await videojob(stack, "submit", *LONG_PATTERN, "--preset", "ultrafast"))
    watch = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        *("watch", job["id"], "--export-addr", stack.export_addr, "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def running() -> bool:
            current = only_object(await videojob(stack, "get", job["id"]))
            return bool(current["status"] == "running")

        await wait_until(running, "the job running")
        await stack.exports[0].akill()
        # Whichever replica each call meets first, the one left answers every command.
        for _ in range(4):
            assert only_object(await videojob(stack, "get", job["id"]))["id"] == job["id"]
        cancelled = only_object(await videojob(stack, "cancel", job["id"]))
        assert cancelled["status"] == "cancelled"
        # The watch, on whichever replica it was, ends with the cancel.
        out, err = await asyncio.wait_for(watch.communicate(), COMMAND_TIMEOUT_SECONDS)
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.communicate()
    assert watch.returncode == ExitStatus.JOB_CANCELLED, err.decode()
    changes = [json.loads(line) for line in out.decode().splitlines()]
    assert changes[-1]["status"] == "cancelled"
    versions = [change["version"] for change in changes]
    assert versions == sorted(set(versions)), versions
