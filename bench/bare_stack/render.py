"""The bare stack's render process: RenderService.Render only (see bench.bare_stack)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from render_service.ffmpeg_command import RenderInputs, build_render_argv, output_frame_rate
from render_service.ffmpeg_process import (
    kill_process_group,
    start_ffmpeg,
    watch_children_with_pidfd,
)
from render_service.ffmpeg_progress import ProgressParser
from render_service.render_job import PREPARING_END, RENDERING_END
from render_service.verification import verify_output
from videojob.endpoints import RENDER_SERVICE
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.grpc_setup import SERVER_OPTIONS, add_health_and_reflection, bind
from videojob.render.v1 import render_pb2, render_pb2_grpc
from videojob.spec_validation import expected_duration_seconds
from videojob.stop_signals import stop_signalled

SERVICE_NAME = RENDER_SERVICE


class BareRenderServicer(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, output_dir: Path) -> None:
        self._output_dir = output_dir
        self._binary = ffmpeg_binary()

    async def Render(
        self, request: render_pb2.RenderRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        spec = request.spec
        expected = expected_duration_seconds(spec)
        frame_rate = output_frame_rate(spec)
        if expected is None or not frame_rate:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "test patterns only")
        assert expected is not None and frame_rate is not None
        container = spec.output.container
        partial = self._output_dir / f"{request.render_id}.partial.{container}"
        final = self._output_dir / f"{request.render_id}.{container}"
        argv = build_render_argv(self._binary, spec, RenderInputs(), partial, expected)
        process = await start_ffmpeg(argv)
        assert process.stdout is not None and process.stderr is not None
        drain_log = asyncio.create_task(process.stderr.read())
        seq = 0
        try:
            parser = ProgressParser()
            async for raw in process.stdout:
                block = parser.feed(raw.decode(errors="replace"))
                if block is None or block.ended or block.frame is None:
                    continue
                written = min(block.frame / frame_rate, expected)
                if written >= expected:
                    continue
                seq += 1
                percent = PREPARING_END + (RENDERING_END - PREPARING_END) * written / expected
                yield render_pb2.RenderEvent(
                    render_id=request.render_id,
                    seq=seq,
                    progress=render_pb2.Progress(
                        percent=percent, stage="Rendering", frame=block.frame
                    ),
                )
            returncode = await process.wait()
        finally:
            drain_log.cancel()
            await asyncio.shield(kill_process_group(process))
        if returncode != 0:
            await context.abort(grpc.StatusCode.INTERNAL, f"ffmpeg exited with {returncode}")
        size, duration = await verify_output(partial, expected)
        os.replace(partial, final)
        yield render_pb2.RenderEvent(
            render_id=request.render_id,
            seq=seq + 1,
            completed=render_pb2.Completed(
                output_path=str(final), size_bytes=size, duration_seconds=duration
            ),
        )


async def serve(listen: str, output_dir: Path) -> None:
    watch_children_with_pidfd()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    port = bind(server, listen)
    # Only Render: the others answer UNIMPLEMENTED, as the generated base does.
    servicer = BareRenderServicer(output_dir)  # type: ignore[abstract]
    render_pb2_grpc.add_RenderServiceServicer_to_server(servicer, server)
    health = await add_health_and_reflection(server, [SERVICE_NAME])
    await server.start()
    print(f"bare render listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    await stop_signalled()
    await health.enter_graceful_shutdown()
    await server.stop(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_stack.render")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--output-dir", type=Path, required=True)
    args, _ = parser.parse_known_args()  # the render service's other flags are taken, unused
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.output_dir))


if __name__ == "__main__":
    main()
