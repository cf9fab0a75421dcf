"""Checking a rendered file before it may be reported ``completed``, with the shared output check
(videojob.output_check): it exists, is non-empty, is a well-formed container (judged by its file
name's extension) with a video stream, and lasts the expected time (within the shared
tolerance). The container's structure is read in-process (container_probe), on a small executor
of its own so that other thread work cannot delay a completion."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from render_service.container_probe import (
    CONTAINERS,
    ContainerInfo,
    InvalidContainer,
    probe_container,
)
from render_service.failures import FailureCode, RenderFailure
from videojob.output_check import (
    CheckedOutput,
    InvalidMedia,
    OutputFault,
    OutputProblem,
    check_output,
)

_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify")

# The render service's words for what the shared check found.
_MESSAGES = {
    OutputFault.MISSING: "no output file was written",
    OutputFault.EMPTY: "the output file is empty",
}


def _container_reader(container: str) -> Callable[[Path], ContainerInfo]:
    def read(path: Path) -> ContainerInfo:
        try:
            return probe_container(path, container)
        except InvalidContainer as invalid:
            raise InvalidMedia(f"not a valid {container} file: {invalid.reason}") from None

    return read


def _failure(problem: OutputProblem) -> RenderFailure:
    if problem.fault is OutputFault.UNREACHABLE:
        return RenderFailure(
            FailureCode.OUTPUT_UNWRITABLE, f"cannot read the output file: {problem.reason}"
        )
    message = _MESSAGES.get(problem.fault, problem.reason)
    return RenderFailure(FailureCode.VERIFICATION_FAILED, message)


async def verify_output(path: Path, expected_seconds: float) -> tuple[int, float]:
    """Returns the file's size and duration, or raises VERIFICATION_FAILED (OUTPUT_UNWRITABLE
    when the file cannot be read)."""
    container = path.suffix.removeprefix(".")
    if container not in CONTAINERS:
        raise RenderFailure(
            FailureCode.VERIFICATION_FAILED, f"the output's container {container!r} is unknown"
        )
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(
        _executor,
        lambda: check_output(
            path, expected_seconds=expected_seconds, read_media=_container_reader(container)
        ),
    )
    if isinstance(result, OutputProblem):
        raise _failure(result)
    assert isinstance(result, CheckedOutput) and result.duration_seconds is not None
    return result.size_bytes, result.duration_seconds
