"""The Celery app of the peer: Redis as broker and result backend, JSON, no "started" state, no
extended results, one task at a time (prefetch 1), and one task, ``render``.

``render`` does what a Python team's Celery task for an ffmpeg export does: it runs the argv it
is given (stdout piped for ffmpeg's ``-progress pipe:1`` blocks, stderr to /dev/null), parses the
blocks with the render service's own parser (render_service.ffmpeg_progress) and maps them to a
percent exactly as the render service does for a constant frame rate (2 % + 93 % x frames
written / frames expected while rendering, 95 % "Finalizing" at the last block), publishes each
block that moved with ``update_state(state="PROGRESS")`` and returns ``{"returncode",
"frames"}``, or raises when ffmpeg failed. Neither the output file nor any record is checked or
written: that is what Celery leaves to the task's author.

The worker imports this module (``celery -A bench.celery_peer.app worker``), so it is configured
from the environment: ``BENCH_CELERY_REDIS_URL`` and ``BENCH_CELERY_QUEUE`` (every Redis key of
the run is prefixed with the queue's name). The benchmark's client builds its own app with
``create_app``."""

from __future__ import annotations

import os
import subprocess
from typing import Any, Protocol

from celery import Celery  # type: ignore[import-untyped]

from render_service.ffmpeg_progress import ProgressParser

URL_ENV = "BENCH_CELERY_REDIS_URL"
QUEUE_ENV = "BENCH_CELERY_QUEUE"
DEFAULT_URL = "redis://127.0.0.1:6379/14"
DEFAULT_QUEUE = "videojob-bench"
RENDER_TASK = "bench.celery_peer.render"

# The render service's bands (render_service.render_job): rendering runs from 2 % to 95 %.
PREPARING_END = 2.0
RENDERING_END = 95.0


class _Reporter(Protocol):
    """What the bound task offers the task body."""

    def update_state(self, *, state: str, meta: dict[str, Any]) -> None: ...


def key_prefix(queue: str) -> str:
    """The prefix of every Redis key the run's broker and result backend write."""
    return f"{queue}:"


def create_app(redis_url: str, queue: str) -> Any:
    """A Celery app on ``redis_url`` (broker and result backend) sending to ``queue``."""
    app = Celery("videojob_bench_peer", set_as_current=False)
    prefix = key_prefix(queue)
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"global_keyprefix": prefix},
        result_backend_transport_options={"global_keyprefix": prefix},
        task_default_queue=queue,
        control_exchange=f"{queue}-control",
        event_exchange=f"{queue}-events",
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_track_started=False,
        result_extended=False,
        worker_prefetch_multiplier=1,
        result_expires=3600,
    )
    app.task(bind=True, name=RENDER_TASK)(render)
    return app


def progress_meta(frame: int, expected_frames: int, *, ended: bool) -> tuple[str, float]:
    """The stage and percent the render service shows for a block (constant frame rate)."""
    if ended or frame >= expected_frames:
        return "Finalizing", RENDERING_END
    share = min(frame, expected_frames) / expected_frames
    return "Rendering", PREPARING_END + (RENDERING_END - PREPARING_END) * share


def render(task: _Reporter, argv: list[str], expected_frames: int) -> dict[str, int]:
    """Runs ``argv``; one PROGRESS update per progress block that moved, none after the
    finalizing one."""
    parser = ProgressParser()
    frames = 0
    last_key: tuple[float | None, int | None, int | None] | None = None
    finalizing = False
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            block = parser.feed(raw.decode(errors="replace"))
            if block is None:
                continue
            key = (block.out_time_seconds, block.frame, block.total_size)
            moved, last_key = key != last_key, key
            if finalizing or not (moved or block.ended):
                continue
            frames = max(frames, block.frame or 0)
            stage, percent = progress_meta(frames, expected_frames, ended=block.ended)
            finalizing = stage == "Finalizing"
            task.update_state(
                state="PROGRESS",
                meta={"stage": stage, "percent": round(percent, 2), "frame": frames},
            )
        returncode = process.wait()
    if returncode != 0:
        raise RuntimeError(f"ffmpeg exited with status {returncode}")
    return {"returncode": returncode, "frames": frames}


app = create_app(os.environ.get(URL_ENV, DEFAULT_URL), os.environ.get(QUEUE_ENV, DEFAULT_QUEUE))
