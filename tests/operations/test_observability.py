"""Metrics, JSON logs and traces of the three real processes after real jobs.

One stack (render service, export service, gateway; real ffmpeg behind a wrapper that fails every
WebM render with a message on stderr) runs a job that completes and one that fails:

- every process's ``/metrics`` passes ``promtool check metrics``, and the job counters moved;
- the export service's JSON log line of the failed job carries ``job_id`` and the ffmpeg log tail
  as fields;
- one trace (an in-test OTLP/HTTP receiver) holds spans of all three processes, the gateway's with
  the job id.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from export_service.tracking.activity_labels import QUESTION_LABELS
from tests.support.polling import poll_until
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess, start_service
from tests.support.prometheus_text import Sample, promtool_problems, samples
from tests.support.render_dirs import RenderDirs
from videojob.ffmpeg_binary import ffmpeg_binary

FAILURE_MESSAGE = "simulated encoder failure for WebM"
GOOD_SPEC = {
    "source": {"testPattern": {"durationSeconds": 1, "width": 160, "height": 120, "fps": 10}},
    "output": {"container": "mp4", "videoCodec": "h264", "preset": "ultrafast"},
}
FAILING_SPEC = {
    "source": {"testPattern": {"durationSeconds": 1, "width": 160, "height": 120, "fps": 10}},
    "output": {"container": "webm", "videoCodec": "vp9"},
}


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    attributes: dict[str, str]


@dataclass
class OtlpReceiver:
    """Collects the spans OTLP/HTTP exporters POST to ``/v1/traces``."""

    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value.string_value for a in span.attributes}
                    found.append(Span(service, span.name, span.trace_id.hex(), attributes))
        with self.lock:
            self.spans.extend(found)

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


@pytest.fixture
def otlp() -> Iterator[tuple[OtlpReceiver, str]]:
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.add(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver, f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def failing_ffmpeg(directory: Path) -> Path:
    """The real ffmpeg, except that a WebM render fails the way a broken encoder does."""
    wrapper = directory / "ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        'case "$*" in *.webm*) echo "' + FAILURE_MESSAGE + '" >&2; exit 1;; esac\n'
        f'exec "{ffmpeg_binary()}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


@dataclass
class Stack:
    render: ServiceProcess
    export: ServiceProcess
    gateway: ServiceProcess
    render_metrics: str
    export_metrics: str


@pytest.fixture
def stack(tmp_path: Path, otlp: tuple[OtlpReceiver, str]) -> Iterator[Stack]:
    dirs = RenderDirs.create(tmp_path, output_name="out")
    env = {
        "FFMPEG_BINARY": str(failing_ffmpeg(tmp_path)),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp[1],
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    render_metrics = f"127.0.0.1:{free_port()}"
    export_metrics = f"127.0.0.1:{free_port()}"
    started: list[ServiceProcess] = []
    try:
        render = start_service(
            "render_service",
            [
                "--listen", "127.0.0.1:0",
                "--output-dir", str(dirs.output),
                "--media-root", str(dirs.media),
                "--metrics-listen", render_metrics,
                "--log-format", "json",
            ],
            env=env,
        )  # fmt: skip
        started.append(render)
        export = start_service(
            "export_service",
            [
                "--listen", "127.0.0.1:0",
                "--render-addr", render.address,
                "--database", str(tmp_path / "jobs.db"),
                "--metrics-listen", export_metrics,
                "--log-format", "json",
            ],
            env=env,
        )  # fmt: skip
        started.append(export)
        gateway = start_service(
            "gateway",
            ["--listen", "127.0.0.1:0", "--export-addr", export.address, "--log-format", "json"],
            env=env,
        )
        started.append(gateway)
        yield Stack(render, export, gateway, render_metrics, export_metrics)
    finally:
        for process in reversed(started):
            process.stop()


def run_job(client: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    created = client.post("/api/jobs", json=spec)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        return job if job["status"] in ("completed", "failed", "cancelled") else None

    return poll_until(finished, f"job {job_id} to finish", within=60)


def label_values(exposed: dict[Sample, float], name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample, labels in exposed if sample == name}


def json_records(process: ServiceProcess) -> list[dict[str, Any]]:
    records = []
    for line in process.output:
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def test_metrics_logs_and_one_trace_across_the_three_processes(
    stack: Stack, otlp: tuple[OtlpReceiver, str]
) -> None:
    receiver = otlp[0]
    with httpx.Client(base_url=f"http://{stack.gateway.address}", timeout=10) as client:
        done = run_job(client, GOOD_SPEC)
        failed = run_job(client, FAILING_SPEC)
        assert done["status"] == "completed"
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "FFMPEG_ERROR"

        gateway_metrics = client.get("/metrics")
        assert gateway_metrics.status_code == 200
        assert gateway_metrics.headers["content-type"].startswith("text/plain")
        export_text = httpx.get(f"http://{stack.export_metrics}/metrics").text
        render_text = httpx.get(f"http://{stack.render_metrics}/metrics").text
        for name, text in (
            ("gateway", gateway_metrics.text),
            ("export", export_text),
            ("render", render_text),
        ):
            assert promtool_problems(text) == "", name

        readyz = client.get("/readyz")
        assert readyz.status_code == 200 and readyz.json()["export"] == "SERVING"
        assert client.get("/healthz").json()["renders"] == "SERVING"

    export_samples = samples(export_text)
    assert export_samples[("videojob_jobs_created_total", frozenset())] == 2
    finished = "videojob_jobs_finished_total"
    assert export_samples[(finished, frozenset({("status", "COMPLETED"), ("code", "")}))] == 1
    failed_key = frozenset({("status", "FAILED"), ("code", "FFMPEG_ERROR")})
    assert export_samples[(finished, failed_key)] == 1
    assert (
        export_samples[
            ("videojob_job_duration_seconds_count", frozenset({("status", "COMPLETED")}))
        ]
        == 1
    )
    assert export_samples[("videojob_jobs_active", frozenset({("status", "running")}))] == 0
    assert (
        export_samples[("videojob_store_write_seconds_count", frozenset({("change", "complete")}))]
        >= 1
    )
    # The tracker's metrics speak in operator names (export_service.tracking.activity_labels).
    questions = label_values(export_samples, "videojob_tracker_questions_total", "question")
    assert "render" in questions and questions <= set(QUESTION_LABELS.values()), questions
    observations = label_values(
        export_samples, "videojob_tracker_observations_total", "observation"
    )
    assert {"job_read", "render_event"} <= observations, observations
    gateway_samples = samples(gateway_metrics.text)
    created_key = frozenset({("method", "POST"), ("route", "/api/jobs"), ("code", "201")})
    assert gateway_samples[("videojob_http_requests_total", created_key)] == 2
    read_key = frozenset({("method", "GET"), ("route", "/api/jobs/{id}")})
    assert gateway_samples[("videojob_http_request_duration_seconds_count", read_key)] >= 2
    render_samples = samples(render_text)
    assert (
        render_samples[
            ("videojob_renders_finished_total", frozenset({("outcome", "completed"), ("code", "")}))
        ]
        == 1
    )
    assert render_samples[("videojob_ffmpeg_processes", frozenset())] == 0
    assert render_samples[("videojob_render_max_concurrent", frozenset())] == (os.cpu_count() or 1)

    failure_records = [
        record
        for record in json_records(stack.export)
        if record.get("job_id") == failed["id"] and "log_tail" in record
    ]
    assert failure_records, "no JSON record of the failed job with its log tail"
    record = failure_records[0]
    assert FAILURE_MESSAGE in record["log_tail"]
    assert {"time", "level", "logger", "message", "replica"} <= record.keys()
    assert FAILURE_MESSAGE not in record["message"]
    assert any(r.get("message", "").startswith("ffmpeg ") for r in json_records(stack.render))

    def one_trace() -> set[str] | None:
        spans = receiver.snapshot()
        created = [
            span
            for span in spans
            if span.service == "gateway" and span.attributes.get("videojob.job_id") == done["id"]
        ]
        if not created:
            return None
        trace_id = created[0].trace_id
        services = {span.service for span in spans if span.trace_id == trace_id}
        names = {span.name for span in spans if span.trace_id == trace_id}
        if services >= {"gateway", "export_service", "render_service"} and "ffmpeg render" in names:
            return names
        return None

    names = poll_until(one_trace, "one trace across gateway, export and render services")
    assert any("CreateExport" in name for name in names)
    assert any(name.endswith("/Render") for name in names)
