"""The whole system as real processes: N render services, M export services and G gateways on
one database, started in order (each healthy before the next needs it) and stopped together.

Used by ``make run``, the tests, the chaos harness and the benchmarks::

    with Stack(StackConfig(workdir)) as stack:      # or: async with Stack(...) as stack
        httpx.get(stack.url + "/healthz")
        stack.export.kill(); stack.export.start()    # back on the same port

Render services share the output directory and the media root (storage every process sees);
gateways get the same media root, where uploads go. With ``storage`` (ObjectStorage) both are
``s3://`` locations in an object store instead, and no two processes share a directory: each
gets one of its own (``Stack.private_dir``), where a render service renders (its
``--scratch-dir``) and which is every process's TMPDIR (where a gateway spools uploads).
Export services get every render address (a comma-separated ``--render-addr``) and gateways
every export address; a list of more than one is the scale-out contract the services are
growing into. Each render service is given its drain as its stop grace: ``stack.render.stop()``
(or ``restart()``) waits while it finishes its running renders, as a rolling restart does, and
``stop(drain_renders=True)`` stops the whole system that way. The database is a URL handed to
every export service: ``sqlite:///PATH`` (the default, in the work directory) or
``postgresql://...``. SQLite serves one export service.

``supervise(stop)`` watches the processes until ``stop`` is set or one of them exits: by default
that ends it (the caller stops the rest, as tests and benchmarks want); a ``restart`` policy in
the configuration (``make run``'s) starts a process that died again on its port instead.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from videojob.endpoints import EXPORT_SERVICE, RENDER_SERVICE
from videojob.grpc_setup import TlsFiles
from videojob.limits import DEFAULT_DRAIN_TIMEOUT_SECONDS
from videojob.storage.location import BadLocation, S3Location, parse_location
from videojob_launcher.health import grpc_serving, http_ok
from videojob_launcher.process import (
    READY_TIMEOUT_SECONDS,
    STOP_GRACE_SECONDS,
    Echo,
    LaunchError,
    Probe,
    ProcessSpec,
    ServiceProcess,
)
from videojob_launcher.supervise import NO_RESTART, Report, RestartPolicy, supervise

SQLITE_PREFIX = "sqlite:///"
SHARED_DATABASE_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class Role:
    """How to run the processes of one kind. ``listen`` is the first one's address; any more
    take a free port on the same host. ``module`` runs a stand-in that takes the same flags."""

    count: int = 1
    listen: str = "127.0.0.1:0"
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    module: str = ""
    # Seconds one of them gets to exit after SIGTERM when stopped on its own (stop, restart)
    # before SIGKILL. None: STOP_GRACE_SECONDS, and for render services their drain timeout
    # (--drain-timeout, RENDER_DRAIN_TIMEOUT) plus that.
    stop_grace: float | None = None


@dataclass(frozen=True)
class ObjectStorage:
    """The media root and the render services' output directory as ``s3://BUCKET/PREFIX``
    locations, reached with ``environ`` (the AWS_* variables every process is given)."""

    media_root: str
    output_dir: str
    environ: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        for flag, value in (("media root", self.media_root), ("output dir", self.output_dir)):
            try:
                location = parse_location(value)
            except BadLocation as why:
                raise ValueError(f"the object storage's {flag} {value!r}: {why}") from None
            if not isinstance(location, S3Location):
                raise ValueError(f"the object storage's {flag} must be s3://..., not {value!r}")


@dataclass(frozen=True)
class StackConfig:
    workdir: Path
    database: str = ""  # a URL; default sqlite:///<workdir>/export.db
    output_dir: Path | None = None  # default <workdir>/renders
    media_root: Path | None = None  # default <workdir>/media
    # Files in an object store (instead of output_dir and media_root), private directories.
    storage: ObjectStorage | None = None
    render: Role = Role()
    export: Role = Role()
    gateway: Role = Role()
    # Client files for the gRPC health checks, when the services are given TLS flags.
    grpc_tls: TlsFiles | None = None
    grpc_server_name: str = ""
    ready_timeout: float = READY_TIMEOUT_SECONDS
    stop_grace: float = STOP_GRACE_SECONDS
    echo: Echo | None = None  # every output line of every process, with its name
    # What supervise() does when a process exits on its own; by default nothing is restarted.
    restart: RestartPolicy = NO_RESTART

    @property
    def database_url(self) -> str:
        return self.database or f"{SQLITE_PREFIX}{self.workdir / 'export.db'}"

    @property
    def sqlite_path(self) -> Path | None:
        url = self.database_url
        return Path(url.removeprefix(SQLITE_PREFIX)) if url.startswith(SQLITE_PREFIX) else None

    @property
    def renders_dir(self) -> Path:
        return self.output_dir or self.workdir / "renders"

    @property
    def media_dir(self) -> Path:
        return self.media_root or self.workdir / "media"

    def check(self) -> None:
        """Refuses what cannot work, before anything is started."""
        url = self.database_url
        if self.sqlite_path is None and not url.startswith(SHARED_DATABASE_SCHEMES):
            raise ValueError(f"database must be sqlite:///PATH or postgresql://..., not {url!r}")
        if self.export.count > 1 and self.sqlite_path is not None:
            raise ValueError(
                f"{self.export.count} export services cannot share a SQLite file: several "
                "export replicas need a shared PostgreSQL database (postgresql://...)"
            )
        for name, role in (("render", self.render), ("export", self.export)):
            if role.count < 0 or (name == "export" and role.count > 0 and self.render.count < 1):
                raise ValueError(f"cannot start {role.count} {name} services with these counts")
        if self.gateway.count < 0:
            raise ValueError("the gateway count cannot be negative")
        if self.storage is not None:
            self.storage.check()
            if self.output_dir is not None or self.media_root is not None:
                raise ValueError("give an object storage or local directories, not both")


def render_args(
    listen: str, output_dir: Path | str, media_root: Path | str, *extra: str
) -> list[str]:
    return [
        "--listen", listen, "--output-dir", str(output_dir), "--media-root", str(media_root),
        *extra,
    ]  # fmt: skip


def export_args(listen: str, render_addr: str, database: str, *extra: str) -> list[str]:
    return ["--listen", listen, "--render-addr", render_addr, "--database", database, *extra]


def gateway_args(listen: str, export_addr: str, *extra: str) -> list[str]:
    return ["--listen", listen, "--export-addr", export_addr, *extra]


def render_drain_timeout(args: Sequence[str], env: Mapping[str, str]) -> float:
    """The drain timeout a render service started with ``args`` and ``env`` (added to this
    process's environment) has: its --drain-timeout, else RENDER_DRAIN_TIMEOUT, else the
    default."""
    given = ""
    for index, arg in enumerate(args):
        if arg == "--drain-timeout" and index + 1 < len(args):
            given = args[index + 1]
        elif arg.startswith("--drain-timeout="):
            given = arg.partition("=")[2]
    given = given or env.get("RENDER_DRAIN_TIMEOUT") or os.environ.get("RENDER_DRAIN_TIMEOUT", "")
    try:
        return max(float(given), 0.0) if given else DEFAULT_DRAIN_TIMEOUT_SECONDS
    except ValueError:  # the service refuses it and exits at once
        return DEFAULT_DRAIN_TIMEOUT_SECONDS


def _listen_of(role: Role, index: int) -> str:
    if index == 0:
        return role.listen
    host = role.listen.rpartition(":")[0]
    return f"{host}:0"


def _name(kind: str, role: Role, index: int) -> str:
    return kind if role.count == 1 else f"{kind}-{index + 1}"


class Stack:
    """The processes of one system. Start with ``start()`` (or ``with``/``async with``); the
    ``start_*`` steps let a caller put something between them (a proxy, a fault)."""

    def __init__(self, config: StackConfig) -> None:
        config.check()
        self.config = config
        self.renders: list[ServiceProcess] = []
        self.exports: list[ServiceProcess] = []
        self.gateways: list[ServiceProcess] = []
        self._abort: threading.Event | None = None

    # -- where things are ---------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        return self.config.workdir

    @property
    def output_dir(self) -> Path:
        return self.config.renders_dir

    @property
    def media_root(self) -> Path:
        return self.config.media_dir

    @property
    def database(self) -> str:
        return self.config.database_url

    def private_dir(self, name: str) -> Path:
        """The directory of the process ``name`` alone (with an object storage)."""
        return self.workdir / "private" / name

    @property
    def processes(self) -> list[ServiceProcess]:
        """Every process, in start order."""
        return [*self.renders, *self.exports, *self.gateways]

    @property
    def render(self) -> ServiceProcess:
        return _first(self.renders, "render")

    @property
    def export(self) -> ServiceProcess:
        return _first(self.exports, "export")

    @property
    def gateway(self) -> ServiceProcess:
        return _first(self.gateways, "gateway")

    @property
    def url(self) -> str:
        """The first gateway's base URL."""
        return f"http://{self.gateway.address}"

    @property
    def render_addr(self) -> str:
        return ",".join(process.address for process in self.renders)

    @property
    def export_addr(self) -> str:
        return ",".join(process.address for process in self.exports)

    def find(self, name: str) -> ServiceProcess:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"no process named {name!r}; there are {[p.name for p in self.processes]}")

    # -- starting -----------------------------------------------------------------------------

    def start(self, *, abort: threading.Event | None = None) -> Stack:
        """Renders, exports, gateways, each healthy before the next starts; on any failure
        (or interruption) everything started so far is stopped and the error raised. ``abort``
        set while it waits calls the start off (Aborted)."""
        self._abort = abort
        try:
            self.start_renders()
            self.start_exports()
            self.start_gateways()
        except BaseException:
            self.stop()
            raise
        finally:
            self._abort = None
        return self

    def start_renders(self) -> list[ServiceProcess]:
        config, role = self.config, self.config.render
        storage = config.storage
        if storage is None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.media_root.mkdir(parents=True, exist_ok=True)
        probe = grpc_serving(RENDER_SERVICE, config.grpc_tls, config.grpc_server_name)
        grace = role.stop_grace
        if grace is None:
            grace = render_drain_timeout(role.args, role.env) + STOP_GRACE_SECONDS
        for index in range(role.count):
            name = _name("render", role, index)
            if storage is None:
                args = render_args(
                    _listen_of(role, index), self.output_dir, self.media_root, *role.args
                )
            else:
                scratch = self.private_dir(name) / "scratch"
                args = render_args(
                    _listen_of(role, index),
                    storage.output_dir,
                    storage.media_root,
                    "--scratch-dir",
                    str(scratch),
                    *role.args,
                )
            module = role.module or "render_service"
            self._start(self.renders, name, module, args, role, probe, grace)
        return self.renders

    def start_exports(self, render_addr: str = "") -> list[ServiceProcess]:
        """``render_addr`` replaces the renders' addresses (e.g. a proxy in front of them)."""
        config, role = self.config, self.config.export
        target = render_addr or self.render_addr
        if role.count and not target:
            raise LaunchError("the export services need a render address: start renders first")
        if config.sqlite_path is not None:
            config.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        probe = grpc_serving(EXPORT_SERVICE, config.grpc_tls, config.grpc_server_name)
        # The render services' output directory is shared with the export services: the
        # partial file of a render service that died is removed there (in an object store:
        # outputs are checked there before COMPLETED, and removed with their jobs; the orphan
        # sweep goes over it and over the media root).
        storage = config.storage
        if storage is None:
            files = ["--render-output-dir", str(self.output_dir)]
        else:
            files = [
                "--render-output-dir", storage.output_dir, "--media-root", storage.media_root,
            ]  # fmt: skip
        for index in range(role.count):
            args = export_args(_listen_of(role, index), target, self.database, *files, *role.args)
            module = role.module or "export_service"
            self._start(self.exports, _name("export", role, index), module, args, role, probe)
        return self.exports

    def start_gateways(self, export_addr: str = "") -> list[ServiceProcess]:
        role = self.config.gateway
        target = export_addr or self.export_addr
        if role.count and not target:
            raise LaunchError("the gateway needs an export address: start exports first")
        storage = self.config.storage
        # Uploads land where the render services read their inputs; outputs in an object store
        # are downloaded from there.
        if storage is None:
            self.media_root.mkdir(parents=True, exist_ok=True)
            files = ["--media-root", str(self.media_root)]
        else:
            files = ["--media-root", storage.media_root, "--render-output-dir", storage.output_dir]
        for index in range(role.count):
            args = gateway_args(_listen_of(role, index), target, *files, *role.args)
            module = role.module or "gateway"
            self._start(self.gateways, _name("gateway", role, index), module, args, role, http_ok())
        return self.gateways

    def _start(
        self,
        started: list[ServiceProcess],
        name: str,
        module: str,
        args: list[str],
        role: Role,
        probe: Probe,
        stop_grace: float | None = None,
    ) -> None:
        grace = role.stop_grace if stop_grace is None else stop_grace
        spec = ProcessSpec(name, module, args, self._environ(name, role), probe, grace)
        process = ServiceProcess(spec, echo=self.config.echo)
        started.append(process)  # before it starts, so that stop() finds it whatever happens
        process.start(self.config.ready_timeout, abort=self._abort)

    def _environ(self, name: str, role: Role) -> dict[str, str]:
        """The role's variables; with an object storage also the store's and a TMPDIR of the
        process's own."""
        storage = self.config.storage
        if storage is None:
            return dict(role.env)
        tmp = self.private_dir(name) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {**storage.environ, "TMPDIR": str(tmp), **role.env}

    # -- watching -----------------------------------------------------------------------------

    def supervise(
        self, stop: threading.Event, report: Report | None = None
    ) -> ServiceProcess | None:
        """Watches every process until ``stop`` is set (None) or the configuration's restart
        policy gives up on one that exited (that one; with the default policy, the first to
        exit). Restarts, when the policy makes them, keep the flags and the port. Each exit
        goes to ``report`` in one line (default: a warning logged by videojob_launcher.supervise).
        Stopping the processes is the caller's: ``stop()``."""
        return supervise(
            self.processes, self.config.restart, stop, report, self.config.ready_timeout
        )

    # -- stopping -----------------------------------------------------------------------------

    def stop(self, *, drain_renders: bool = False) -> None:
        """SIGTERM to every process (gateways first, so no new work comes in), one shared grace
        period to exit, then SIGKILL for any still there. Render services are told to stop at
        once (``request_stop(at_once=True)``: their running renders fail SHUTDOWN) unless
        ``drain_renders``: then they are stopped first, each waited for up to its own stop grace
        while it finishes its running renders and the export services record them."""
        if drain_renders:
            started = time.monotonic()
            for process in self.renders:
                process.request_stop()
            for process in self.renders:
                process.wait_stopped(started + process.stop_grace)
        processes = list(reversed(self.processes))
        for process in processes:
            process.request_stop(at_once=process in self.renders)
        deadline = time.monotonic() + self.config.stop_grace
        for process in processes:
            process.wait_stopped(deadline)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the same from an event loop -----------------------------------------------------------

    async def astart(self) -> Stack:
        return await asyncio.to_thread(self.start)

    async def astop(self, *, drain_renders: bool = False) -> None:
        await asyncio.to_thread(lambda: self.stop(drain_renders=drain_renders))

    async def __aenter__(self) -> Stack:
        return await self.astart()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.astop()


def _first(processes: list[ServiceProcess], kind: str) -> ServiceProcess:
    if not processes:
        raise LaunchError(f"this stack has no {kind} process (not started, or a count of 0)")
    return processes[0]
