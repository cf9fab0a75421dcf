"""The bare stack's gateway: ``POST /api/jobs`` and ``GET /api/jobs/{id}/events`` only (see
bench.bare_stack), on the gateway's server settings (uvicorn, uvloop, httptools)."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import CHANNEL_OPTIONS
from videojob.job_json import job_to_json, spec_from_json, sse_event_name

SSE_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}


def create_app(export_addr: str) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(export_addr, options=CHANNEL_OPTIONS)
        app.state.export = export_pb2_grpc.ExportServiceStub(channel)
        yield
        await channel.close(None)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def create_job(request: Request) -> Response:
        spec = spec_from_json(await request.json())
        job = await request.app.state.export.CreateExport(
            export_pb2.CreateExportRequest(
                request_id=request.headers.get("Idempotency-Key", ""), spec=spec
            )
        )
        return JSONResponse(job_to_json(job), status_code=201)

    async def job_events(request: Request) -> Response:
        call = request.app.state.export.WatchExport(
            export_pb2.WatchExportRequest(id=request.path_params["job_id"])
        )

        async def frames() -> AsyncIterator[bytes]:
            try:
                async for job in call:
                    data = json.dumps(job_to_json(job), separators=(",", ":"))
                    name = sse_event_name(job)
                    yield f"event: {name}\nid: {job.version}\ndata: {data}\n\n".encode()
            finally:
                call.cancel()

        return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/api/jobs", create_job, methods=["POST"]),
            Route("/api/jobs/{job_id}/events", job_events),
        ],
        lifespan=lifespan,
    )


class BareServer(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"bare gateway listening on {host}:{port}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_stack.gateway")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--export-addr", required=True)
    args, _ = parser.parse_known_args(argv)  # the gateway's other flags are taken, unused
    host, _, port = args.listen.rpartition(":")
    config = uvicorn.Config(
        create_app(args.export_addr),
        host=host.strip("[]"),
        port=int(port),
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        server_header=False,
    )
    BareServer(config).run()


if __name__ == "__main__":
    main()
