"""Wall-clock stamps of the steps an event takes from ffmpeg to an SSE client: the latency
profile's raw data (bench/bench_latency.py, docs/performance.md).

Off unless the process starts with ``VIDEOJOB_STAMPS`` naming a file: then each ``stamp`` keeps
``(time.time(), step, job id, detail)`` in memory, and the process appends them to that file when
it exits. Stamping writes nothing while the services run, so it adds no I/O to the paths it
measures; when off, a stamp is one attribute test."""

from __future__ import annotations

import atexit
import os
import time

_path = os.environ.get("VIDEOJOB_STAMPS", "")
_kept: list[tuple[float, str, str, str]] = []
enabled = bool(_path)


def stamp(step: str, job_id: str, detail: object = "") -> None:
    if enabled:
        _kept.append((time.time(), step, job_id, str(detail)))


def _write() -> None:
    if not _kept:
        return
    pid = os.getpid()
    lines = [f"{when:.6f} {pid} {step} {job} {detail}\n" for when, step, job, detail in _kept]
    with open(_path, "a", encoding="utf-8") as file:
        file.writelines(lines)


if enabled:
    atexit.register(_write)
