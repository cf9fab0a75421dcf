"""OpenTelemetry tracing, off unless the standard ``OTEL_*`` environment variables ask for it.

``OTEL_TRACES_EXPORTER`` names the exporters (``otlp``: OTLP over HTTP/protobuf, configured by
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``/``OTEL_EXPORTER_OTLP_ENDPOINT`` and the other OTLP
variables; ``console``: spans as JSON on stderr; ``none``). Unset, an OTLP endpoint variable
alone switches the OTLP exporter on. ``OTEL_SDK_DISABLED=true`` keeps tracing off.
``OTEL_SERVICE_NAME`` overrides the process's name. The trace context crosses processes through
the gRPC instrumentation's metadata (W3C traceparent, ``OTEL_PROPAGATORS``) and, for a job, its
stored ``trace_context`` (``inject_context``/``extract_context``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

logger = logging.getLogger(__name__)

TRACER_NAME = "videojob"
JOB_ID_ATTRIBUTE = "videojob.job_id"
RENDER_ID_ATTRIBUTE = "videojob.render_id"
ATTEMPT_ATTRIBUTE = "videojob.attempt"

_enabled = False


def tracing_enabled() -> bool:
    return _enabled


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The trace exporters the environment asks for (empty: tracing stays off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [
        name.strip().lower()
        for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    ]
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if not names and any(environ.get(name) for name in endpoints):
        names = ["otlp"]
    return [name for name in names if name != "none"]


def configure_tracing(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Installs the tracer provider the environment asks for; False when tracing stays off.
    Spans still buffered are exported when the process exits."""
    global _enabled
    environ = os.environ if environ is None else environ
    names = exporter_names(environ)
    if not names:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        else:
            logger.warning("OTEL_TRACES_EXPORTER: unknown exporter %r ignored", name)
    trace.set_tracer_provider(provider)
    _enabled = True
    logger.info("tracing on: %s", ", ".join(names))
    return True


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def server_interceptors() -> list[Any]:
    """The gRPC server interceptors that continue callers' traces (none while tracing is off)."""
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def client_interceptors() -> Sequence[Any]:
    """The gRPC channel interceptors that carry the current trace (none while tracing is off)."""
    if not _enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


def inject_context() -> str:
    """The current trace context as text to store with a job ("" when there is none)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, sort_keys=True) if carrier else ""


def extract_context(stored: str) -> otel_context.Context | None:
    """The trace context ``inject_context`` stored; None when there is none (or it is bad)."""
    if not stored:
        return None
    try:
        carrier = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(carrier, dict):
        return None
    return propagate.extract({str(key): str(value) for key, value in carrier.items()})


def annotate_current_span(**attributes: str | int) -> None:
    """Sets ``videojob.<name>`` attributes on the current span (nothing when none records)."""
    span = trace.get_current_span()
    if span.is_recording():
        for name, value in attributes.items():
            span.set_attribute(f"videojob.{name}", value)
