"""A job keeps the trace of the request that created it: the trace context is stored with the
job's insert, and the export service that drives the job after a restart continues that trace
(real processes, an in-test OTLP receiver).

The render service is down while the first export service holds the job, so every span the
render service sends for it comes from the render the restarted export service asked for."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc

from export_service.store.sqlite import SqliteJobStore
from tests.operations.test_observability import OtlpReceiver, Span
from tests.operations.test_observability import otlp as otlp
from tests.support.polling import poll_until
from tests.support.processes import ServiceProcess, start_service
from tests.support.render_dirs import RenderDirs
from tests.support.specs import pattern_spec
from videojob.export.v1 import export_pb2, export_pb2_grpc


def stored_trace_context(database: Path, job_id: str) -> str:
    async def read() -> str:
        store = await SqliteJobStore.open(database)
        try:
            return await store.trace_context(job_id)
        finally:
            await store.close()

    return asyncio.run(read())


def spans_of_trace(receiver: OtlpReceiver, trace_id: str) -> list[Span]:
    return [span for span in receiver.snapshot() if span.trace_id == trace_id]


def test_a_restarted_export_service_continues_the_jobs_trace(
    tmp_path: Path, otlp: tuple[OtlpReceiver, str]
) -> None:
    receiver, endpoint = otlp
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    dirs = RenderDirs.create(tmp_path, output_name="out")
    database = tmp_path / "jobs.db"
    started: list[ServiceProcess] = []
    try:
        render = start_service(
            "render_service",
            ["--listen", "127.0.0.1:0", "--output-dir", str(dirs.output),
             "--media-root", str(dirs.media)],
            env=env,
        )  # fmt: skip
        started.append(render)
        render.stop()  # down until the export service has restarted; it comes back on its port
        export_args = [
            "--listen", "127.0.0.1:0", "--render-addr", render.address,
            "--database", str(database), "--backoff-initial", "0.2", "--backoff-max", "0.5",
        ]  # fmt: skip
        first = start_service("export_service", export_args, env=env)
        started.append(first)
        with grpc.insecure_channel(first.address) as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)
            job = stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec(1.0)))

        def create_span() -> Span | None:
            return next(
                (
                    span
                    for span in receiver.snapshot()
                    if span.service == "export_service" and span.name.endswith("/CreateExport")
                ),
                None,
            )

        trace_id = poll_until(create_span, "the CreateExport span").trace_id
        first.stop()
        stored = json.loads(stored_trace_context(database, job.id))
        assert stored["traceparent"].split("-")[1] == trace_id
        assert not [
            span for span in spans_of_trace(receiver, trace_id) if span.service == "render_service"
        ]

        second = start_service("export_service", export_args, env=env)
        started.append(second)
        render.start()
        with grpc.insecure_channel(second.address) as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)

            def finished() -> export_pb2.VideoJob | None:
                state = stub.GetExport(export_pb2.GetExportRequest(id=job.id), timeout=10)
                return state if state.status == export_pb2.COMPLETED else None

            poll_until(finished, f"job {job.id} to complete after the restart")

        def render_spans() -> set[str] | None:
            """Both the Render call's span and ffmpeg's, once exported: the child ends first,
            and the two may leave in different batches."""
            names = {
                span.name
                for span in spans_of_trace(receiver, trace_id)
                if span.service == "render_service"
            }
            rendered = any(name.endswith("/Render") for name in names)
            return names if rendered and "ffmpeg render" in names else None

        poll_until(render_spans, "the Render and ffmpeg spans in the job's trace")
    finally:
        for process in reversed(started):
            process.stop()
