"""Starts the system's real processes (render services, export services, gateways), waits until
each is healthy, watches them (restarting one that dies, when asked) and stops them: one launcher
for ``make run``, the tests, chaos and bench."""

from videojob.endpoints import EXPORT_SERVICE, RENDER_SERVICE
from videojob_launcher.health import grpc_serving, http_ok
from videojob_launcher.process import (
    Aborted,
    LaunchError,
    Probe,
    ProcessSpec,
    Run,
    ServiceProcess,
    launch,
)
from videojob_launcher.stack import (
    ObjectStorage,
    Role,
    Stack,
    StackConfig,
    export_args,
    gateway_args,
    render_args,
)
from videojob_launcher.supervise import RestartPolicy, describe_status

__all__ = [
    "EXPORT_SERVICE",
    "RENDER_SERVICE",
    "Aborted",
    "LaunchError",
    "ObjectStorage",
    "Probe",
    "ProcessSpec",
    "RestartPolicy",
    "Role",
    "Run",
    "ServiceProcess",
    "Stack",
    "StackConfig",
    "describe_status",
    "export_args",
    "gateway_args",
    "grpc_serving",
    "http_ok",
    "launch",
    "render_args",
]
