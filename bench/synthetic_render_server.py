"""A RenderService that renders nothing: it speaks the real protocol (Render, WatchRender with
after_seq resume, GetRender, CancelRender) and emits progress at a fixed rate for a set
duration, then a Completed event naming a real small video (hard links to one file made once).

It lets the export service be measured on many concurrent renders without spending the
machine on FFmpeg. ``python -m bench.synthetic_render_server --listen HOST:PORT
--output-dir DIR [--duration S] [--rate HZ] [--render-log FILE]`` prints
``synthetic_render_server listening on HOST:PORT``.

``--hold-file FILE`` keeps every render that reached its end at its last progress (sent again at
the rate, as heartbeats) until FILE exists: a test decides when the renders complete instead of
guessing how long its own steps take.

``--render-log FILE`` appends the render id of every render it starts (a Render call for an id it
already knows re-attaches and starts nothing), one a line, written before the first event is
sent: how many renders a job cost, counted where they happen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from videojob.endpoints import RENDER_SERVICE
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.grpc_setup import SERVER_OPTIONS, add_health_and_reflection, bind
from videojob.render.v1 import render_pb2, render_pb2_grpc
from videojob.stop_signals import stop_signalled

logger = logging.getLogger(__name__)

SERVICE_NAME = RENDER_SERVICE
RENDER_BAND_START = 2.0
RENDER_BAND_END = 95.0
TEMPLATE_SECONDS = 1.0


@dataclass(frozen=True)
class SyntheticConfig:
    output_dir: Path
    listen: str = "127.0.0.1:0"
    # Overrides the spec's test-pattern duration when set.
    duration: float | None = None
    rate_hz: float = 10.0
    render_log: Path | None = None
    hold_file: Path | None = None


@dataclass
class SyntheticRender:
    render_id: str
    duration: float
    events: list[render_pb2.RenderEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def terminal(self) -> bool:
        return bool(self.events) and self.events[-1].WhichOneof("event") != "progress"

    def state(self) -> render_pb2.RenderState.ValueType:
        if not self.events:
            return render_pb2.RENDER_STATE_QUEUED
        kind = self.events[-1].WhichOneof("event")
        return {
            "completed": render_pb2.RENDER_STATE_COMPLETED,
            "failed": render_pb2.RENDER_STATE_FAILED,
            "cancelled": render_pb2.RENDER_STATE_CANCELLED,
        }.get(kind or "", render_pb2.RENDER_STATE_RUNNING)

    def append(self, event: render_pb2.RenderEvent) -> None:
        if self.terminal:
            return
        event.render_id = self.render_id
        event.seq = len(self.events) + 1
        now = Timestamp()
        now.GetCurrentTime()
        event.time.CopyFrom(now)
        self.events.append(event)
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self, after_seq: int) -> AsyncIterator[render_pb2.RenderEvent]:
        index = after_seq
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.terminal:
                return
            await self.changed.wait()


def make_template_video(path: Path) -> None:
    """One small real video (H.264 + AAC in MP4) that every completed render links to."""
    argv = [
        ffmpeg_binary(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=160x120:rate=10:duration={TEMPLATE_SECONDS}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:duration={TEMPLATE_SECONDS}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(path),
    ]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


class SyntheticRenderService(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, config: SyntheticConfig, template: Path) -> None:
        self._config = config
        self._template = template
        self._renders: dict[str, SyntheticRender] = {}
        self.started = 0

    def _duration_for(self, request: render_pb2.RenderRequest) -> float:
        if self._config.duration is not None:
            return self._config.duration
        pattern = request.spec.source.test_pattern
        return pattern.duration_seconds if pattern.duration_seconds > 0 else 5.0

    def _output_path(self, render_id: str) -> Path:
        return self._config.output_dir / f"{render_id}.mp4"

    async def _drive(self, render: SyntheticRender) -> None:
        render.append(render_pb2.RenderEvent(progress=render_pb2.Progress(stage="Preparing")))
        interval = 1.0 / self._config.rate_hz
        started = time.monotonic()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, started + tick * interval - time.monotonic()))
            elapsed = min(time.monotonic() - started, render.duration)
            fraction = elapsed / render.duration
            band = RENDER_BAND_END - RENDER_BAND_START
            render.append(
                render_pb2.RenderEvent(
                    progress=render_pb2.Progress(
                        percent=RENDER_BAND_START + band * fraction,
                        stage="Rendering",
                        frame=int(elapsed * 30),
                        fps=30.0,
                        speed=1.0,
                        out_time_seconds=elapsed,
                        eta_seconds=render.duration - elapsed,
                    )
                )
            )
            if elapsed >= render.duration:
                break
        hold = self._config.hold_file
        while hold is not None and not hold.exists():
            await asyncio.sleep(interval)
            held = render_pb2.RenderEvent()
            held.CopyFrom(render.events[-1])
            held.progress.heartbeat = True
            render.append(held)
        output = self._output_path(render.render_id)
        with contextlib.suppress(FileExistsError):
            os.link(self._template, output)
        render.append(
            render_pb2.RenderEvent(
                progress=render_pb2.Progress(percent=99.0, stage="Verifying", out_time_seconds=0)
            )
        )
        render.append(
            render_pb2.RenderEvent(
                completed=render_pb2.Completed(
                    output_path=str(output),
                    size_bytes=output.stat().st_size,
                    duration_seconds=render.duration,
                )
            )
        )

    def _start(self, request: render_pb2.RenderRequest) -> SyntheticRender:
        render = self._renders.get(request.render_id)
        if render is None:
            render = SyntheticRender(request.render_id, self._duration_for(request))
            self._renders[request.render_id] = render
            render.task = asyncio.create_task(self._drive(render))
            self.started += 1
            if self._config.render_log is not None:
                with self._config.render_log.open("a") as log:
                    log.write(f"{request.render_id}\n")
        return render

    async def Render(
        self, request: render_pb2.RenderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        if not request.render_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "render_id is required")
        async for event in self._start(request).follow(0):
            yield event

    async def _known(
        self, render_id: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> SyntheticRender:
        render = self._renders.get(render_id)
        if render is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"render {render_id!r} not found")
        assert render is not None
        return render

    async def WatchRender(
        self, request: render_pb2.WatchRenderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        render = await self._known(request.render_id, context)
        async for event in render.follow(request.after_seq):
            yield event

    async def GetRender(
        self, request: render_pb2.GetRenderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> render_pb2.RenderInfo:
        render = await self._known(request.render_id, context)
        return self._info(render)

    async def GetCapacity(
        self, request: render_pb2.GetCapacityRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> render_pb2.Capacity:
        """Unbounded: every render runs at once (there is no queue to report)."""
        running = sum(not render.terminal for render in self._renders.values())
        return render_pb2.Capacity(
            running=running, max_concurrent=max(running, 1), instance_id="synthetic"
        )

    async def CheckInputs(
        self, request: render_pb2.CheckInputsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> render_pb2.CheckInputsResponse:
        """Every spec's inputs are fine: a synthetic render reads none."""
        return render_pb2.CheckInputsResponse()

    async def CancelRender(
        self, request: render_pb2.CancelRenderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> render_pb2.RenderInfo:
        render = await self._known(request.render_id, context)
        if not render.terminal:
            if render.task is not None:
                render.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await render.task
            self._output_path(render.render_id).unlink(missing_ok=True)
            render.append(
                render_pb2.RenderEvent(cancelled=render_pb2.Cancelled(reason="cancel requested"))
            )
        return self._info(render)

    def _info(self, render: SyntheticRender) -> render_pb2.RenderInfo:
        info = render_pb2.RenderInfo(render_id=render.render_id, state=render.state())
        if render.events:
            info.last_event.CopyFrom(render.events[-1])
        return info


async def create_server(config: SyntheticConfig) -> tuple[grpc.aio.Server, int]:
    config.output_dir.mkdir(parents=True, exist_ok=True)
    template = config.output_dir / ".synthetic-template.mp4"
    if not template.exists():
        await asyncio.to_thread(make_template_video, template)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    render_pb2_grpc.add_RenderServiceServicer_to_server(
        SyntheticRenderService(config, template), server
    )
    await add_health_and_reflection(server, [SERVICE_NAME])
    port = bind(server, config.listen)
    await server.start()
    return server, port


async def serve(config: SyntheticConfig) -> None:
    server, port = await create_server(config)
    host = config.listen.rsplit(":", 1)[0]
    print(f"synthetic_render_server listening on {host}:{port}", flush=True)
    await stop_signalled()
    await server.stop(grace=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic_render_server")
    parser.add_argument("--listen", default=os.environ.get("SYNTHETIC_LISTEN", "127.0.0.1:0"))
    parser.add_argument("--output-dir", type=Path, default=os.environ.get("SYNTHETIC_OUTPUT_DIR"))
    # Taken, and unused, so that it stands in for the render service with the same flags.
    parser.add_argument("--media-root", type=Path, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--rate", type=float, default=10.0, help="progress events per second")
    parser.add_argument(
        "--render-log", type=Path, default=None, help="appends each started render's id here"
    )
    parser.add_argument(
        "--hold-file",
        type=Path,
        default=None,
        help="renders that reached their end wait for this file to exist before completing",
    )
    args = parser.parse_args()
    if args.output_dir is None:
        parser.error("--output-dir is required")
    logging.basicConfig(level=logging.WARNING)
    config = SyntheticConfig(
        output_dir=args.output_dir,
        listen=args.listen,
        duration=args.duration,
        rate_hz=args.rate,
        render_log=args.render_log,
        hold_file=args.hold_file,
    )
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
