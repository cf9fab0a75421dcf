"""Starts the system's real processes (render services, export services, gateways), waits until
each is healthy, and stops them: one launcher for ``make run``, the tests, chaos and bench."""

from videojob.launcher.health import grpc_serving, http_ok
from videojob.launcher.process import (
    LaunchError,
    Probe,
    ProcessSpec,
    Run,
    ServiceProcess,
    launch,
)
from videojob.launcher.stack import (
    EXPORT_SERVICE,
    RENDER_SERVICE,
    Role,
    Stack,
    StackConfig,
    export_args,
    gateway_args,
    render_args,
)

__all__ = [
    "EXPORT_SERVICE",
    "RENDER_SERVICE",
    "LaunchError",
    "Probe",
    "ProcessSpec",
    "Role",
    "Run",
    "ServiceProcess",
    "Stack",
    "StackConfig",
    "export_args",
    "gateway_args",
    "grpc_serving",
    "http_ok",
    "launch",
    "render_args",
]
