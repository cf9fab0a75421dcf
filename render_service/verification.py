"""Checking a rendered file before it may be reported ``completed``: it exists, is non-empty, is
a well-formed container (judged by its file name's extension) with a video stream, and lasts the
expected time (within 0.5 s). The container's structure is read in-process (container_probe), on
a small executor of its own so that other thread work cannot delay a completion."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from render_service.container_probe import (
    CONTAINERS,
    ContainerInfo,
    InvalidContainer,
    probe_container,
)
from render_service.failures import FailureCode, RenderFailure

DURATION_TOLERANCE_SECONDS = 0.5
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify")


def _inspect(path: Path, container: str) -> tuple[int, ContainerInfo]:
    """The file's size and structure; raises RenderFailure."""
    try:
        size = os.stat(path).st_size
        if size == 0:
            raise RenderFailure(FailureCode.VERIFICATION_FAILED, "the output file is empty")
        return size, probe_container(path, container)
    except FileNotFoundError:
        raise RenderFailure(FailureCode.VERIFICATION_FAILED, "no output file was written") from None
    except InvalidContainer as invalid:
        raise RenderFailure(
            FailureCode.VERIFICATION_FAILED, f"not a valid {container} file: {invalid.reason}"
        ) from None
    except OSError as exc:
        raise RenderFailure(
            FailureCode.OUTPUT_UNWRITABLE, f"cannot read the output file: {exc.strerror or exc}"
        ) from None


async def verify_output(path: Path, expected_seconds: float) -> tuple[int, float]:
    """Returns the file's size and duration, or raises VERIFICATION_FAILED."""
    container = path.suffix.removeprefix(".")
    if container not in CONTAINERS:
        raise RenderFailure(
            FailureCode.VERIFICATION_FAILED, f"the output's container {container!r} is unknown"
        )
    loop = asyncio.get_running_loop()
    size, info = await loop.run_in_executor(_executor, _inspect, path, container)
    if not info.has_video:
        raise RenderFailure(FailureCode.VERIFICATION_FAILED, "the output has no video stream")
    duration = info.duration_seconds
    if abs(duration - expected_seconds) > DURATION_TOLERANCE_SECONDS:
        raise RenderFailure(
            FailureCode.VERIFICATION_FAILED,
            f"the output lasts {duration:.2f} s, expected {expected_seconds:.2f} s",
        )
    return size, duration
