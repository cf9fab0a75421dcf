"""The real processes (videojob_launcher), a proxy between the export services and each render
service, the database and the files they use.

One machine's form: one render service, one export service on SQLite, one gateway. The cluster
form (``cluster=True``): 3 export replicas on PostgreSQL, 2 render services, one gateway given
every export address. Its database is a throwaway PostgreSQL cluster of the run (so that a fault
can stop and start it), or a fresh database of the run on the shared server (then the database
is never restarted). A killed service comes back on the port it had, so the addresses
the others hold stay valid.

With ``s3=True`` the outputs are objects in a SeaweedFS of the run's own (``--output-dir
s3://...`` on the render services, ``--render-output-dir s3://...`` on the export services and
the gateway): each render service renders into a private scratch directory of its own under
``scratch_root`` (a fresh one per start, its TMPDIR), and the store can be killed and started
again on its ports, or paused. The inputs stay in the local media root.

With ``webhook_url`` every export replica tells that endpoint (the operator's, ``--webhook-url``)
of every job's status changes, signed with ``webhook_secret``.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import videojob_launcher as launcher
from tests.support.media import header_duration
from tests.support.postgres import (
    ThrowawayCluster,
    create_run_database,
    drop_run_database,
)
from tests.support.seaweedfs import SeaweedFS
from tests.support.tcp_proxy import TcpProxy
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.storage.location import S3Location
from videojob_launcher import Role, ServiceProcess, StackConfig

CLIP_NAME = "clip.mp4"
CORRUPT_NAME = "corrupt.mp4"
CLUSTER_EXPORTS = 3
CLUSTER_RENDERS = 2
# Short, so that a replica paused or killed loses its jobs within seconds of a fault; long enough
# that the 2-core machine's load does not cost a lease without one.
CLUSTER_LEASE_TTL = 4.0
# A drained render service finishes its running renders (a few seconds each here) before exiting.
CLUSTER_DRAIN_TIMEOUT = 15.0
# Where the outputs go in the store, in s3 mode.
OUTPUT_PREFIX = "chaos/renders"
# Seconds one webhook attempt may take: a replica killed or paused while it holds deliveries
# loses them to another within this and the claim's margin (5 s).
WEBHOOK_TIMEOUT = "5"


@dataclass
class StackSettings:
    workdir: Path
    stall_timeout: float = 3.0
    max_attempts: int = 8
    max_concurrent: int = 2
    cluster: bool = False
    # Cluster form only: True puts the run's database on the shared server (tests.support.postgres:
    # 127.0.0.1:5432 or VIDEOJOB_TEST_POSTGRES), never restarted; False: a throwaway PostgreSQL
    # cluster of the run, which the database fault stops and starts.
    shared_postgres: bool = False
    lease_ttl: float = CLUSTER_LEASE_TTL
    # The outputs in an object store of the run's own (a SeaweedFS), not in a shared directory.
    s3: bool = False
    # The operator's webhook endpoint every job tells of each status change (the run's receiver,
    # tests.chaos.webhooks), and the secret that signs the deliveries; none when empty.
    webhook_url: str = ""
    webhook_secret: str = ""


def decode_errors(path: Path) -> str:
    """Decodes every frame of ``path``; returns ffmpeg's error output (empty when clean)."""
    result = subprocess.run(
        [tool_ffmpeg(), "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        return result.stderr.strip() or f"ffmpeg exited with {result.returncode}"
    return result.stderr.strip()


def make_media(media_root: Path, rng: random.Random) -> float:
    """A tiny valid clip and a corrupt file; returns the clip's duration."""
    media_root.mkdir(parents=True, exist_ok=True)
    clip = media_root / CLIP_NAME
    subprocess.run(
        [
            tool_ffmpeg(), "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-shortest", str(clip),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    head = clip.read_bytes()[:32]
    (media_root / CORRUPT_NAME).write_bytes(head + rng.randbytes(48 * 1024))
    duration = header_duration(clip)
    assert duration is not None, "the harness's own clip has no duration"
    return duration


@dataclass
class Stack:
    settings: StackSettings
    proxies: list[TcpProxy] = field(default_factory=list)
    postgres: ThrowawayCluster | None = None
    database: str = ""
    # s3 mode: the run's object store, once started.
    store: SeaweedFS | None = None
    processes: launcher.Stack = field(init=False)

    def _config(self) -> StackConfig:
        settings = self.settings
        stall = str(settings.stall_timeout)
        render_args: tuple[str, ...] = ("--max-concurrent", str(settings.max_concurrent))
        render_args += ("--stall-timeout", stall)
        export_args: tuple[str, ...] = ("--stall-timeout", stall)
        export_args += ("--max-attempts", str(settings.max_attempts))
        store_env: dict[str, str] = {}
        render_env: dict[str, str] = {}
        gateway_args: tuple[str, ...] = ()
        if self.store is not None:
            url = str(self.output_location)
            store_env = self.store.environ()
            render_env = {**store_env, "TMPDIR": str(self.scratch_root)}
            render_args += ("--output-dir", url)
            # What no clean-up could remove (a render service killed mid-upload) is the orphan
            # sweep's: often here, so the end-of-run check sees the store after a pass.
            export_args += ("--render-output-dir", url, "--orphan-sweep-interval", "2")
            gateway_args = ("--render-output-dir", url)
        gateway = Role(args=gateway_args, env=store_env)
        export_env = dict(store_env)
        if settings.webhook_url:
            export_args += ("--webhook-url", settings.webhook_url, "--webhook-events", "all")
            export_args += ("--webhook-allow-private", "--webhook-timeout", WEBHOOK_TIMEOUT)
            export_env["EXPORT_WEBHOOK_SECRET"] = settings.webhook_secret
        if not settings.cluster:
            return StackConfig(
                settings.workdir,
                database=f"sqlite:///{settings.workdir / 'jobs.sqlite3'}",
                output_dir=settings.workdir / "output",
                render=Role(args=render_args, env=render_env),
                export=Role(args=export_args, env=export_env),
                gateway=gateway,
            )
        return StackConfig(
            settings.workdir,
            # Known once the database is up (start); until then only the paths are used.
            database=self.database or "postgresql://127.0.0.1/not-started",
            output_dir=settings.workdir / "output",
            render=Role(
                count=CLUSTER_RENDERS,
                args=(*render_args, "--drain-timeout", str(CLUSTER_DRAIN_TIMEOUT)),
                env=render_env,
            ),
            export=Role(
                count=CLUSTER_EXPORTS,
                args=(*export_args, "--lease-ttl", str(settings.lease_ttl)),
                env=export_env,
            ),
            gateway=gateway,
        )

    def __post_init__(self) -> None:
        self.processes = launcher.Stack(self._config())

    @property
    def cluster(self) -> bool:
        return self.settings.cluster

    @property
    def media_root(self) -> Path:
        return self.processes.media_root

    @property
    def output_dir(self) -> Path:
        return self.processes.output_dir

    @property
    def s3(self) -> bool:
        return self.settings.s3

    @property
    def scratch_root(self) -> Path:
        """s3 mode: where each render service makes its private scratch directory."""
        return self.settings.workdir / "scratch"

    @property
    def ffmpeg_dir(self) -> Path:
        """The directory every ffmpeg of the run writes under (named on its command line)."""
        return self.scratch_root if self.s3 else self.output_dir

    @property
    def output_location(self) -> S3Location:
        assert self.store is not None, "not in s3 mode, or the store is not started"
        return self.store.location(OUTPUT_PREFIX)

    @property
    def gateway_url(self) -> str:
        return self.processes.url

    @property
    def export_addresses(self) -> list[str]:
        return [process.address for process in self.processes.exports]

    @property
    def renders(self) -> list[ServiceProcess]:
        return self.processes.renders

    @property
    def exports(self) -> list[ServiceProcess]:
        return self.processes.exports

    @property
    def gateway(self) -> ServiceProcess:
        return self.processes.gateway

    def service(self, name: str) -> ServiceProcess:
        return self.processes.find(name)

    async def _start_database(self) -> None:
        if not self.cluster:
            return
        if self.settings.shared_postgres:
            self.database = await create_run_database()
        else:
            self.postgres = ThrowawayCluster()
            await asyncio.to_thread(self.postgres.init)
            await asyncio.to_thread(self.postgres.start)
            self.database = self.postgres.url

    async def _start_store(self) -> None:
        if self.s3:
            self.scratch_root.mkdir(parents=True, exist_ok=True)
            self.store = await asyncio.to_thread(SeaweedFS.start)

    async def start(self) -> None:
        """The database, the render services, a proxy in front of each, then the export services
        (through the proxies) and the gateway; what started is stopped again when a step
        fails."""
        try:
            await self._start_store()
            await self._start_database()
            # The services' flags name the database and the store, known from now on.
            self.processes = launcher.Stack(self._config())
            await asyncio.to_thread(self.processes.start_renders)
            for render in self.renders:
                self.proxies.append(await TcpProxy("127.0.0.1", render.port).start())
            proxied = ",".join(proxy.address for proxy in self.proxies)
            await asyncio.to_thread(self.processes.start_exports, proxied)
            await asyncio.to_thread(self.processes.start_gateways)
        except BaseException:
            await self.stop()
            raise

    async def kill(self, name: str) -> None:
        await self.service(name).akill()

    async def launch(self, name: str) -> None:
        """Starts ``name`` again on its port."""
        await self.service(name).astart()

    async def restart(self, name: str) -> None:
        await self.kill(name)
        await self.launch(name)

    async def graceful_stop(self, name: str) -> None:
        """SIGTERM, then waits for the exit (up to its stop grace: a render service drains)."""
        process = self.service(name)
        await asyncio.to_thread(process.stop)

    async def stop_database(self) -> None:
        assert self.postgres is not None
        await asyncio.to_thread(self.postgres.stop, "fast")

    async def start_database(self) -> None:
        assert self.postgres is not None
        await asyncio.to_thread(self.postgres.start)

    async def kill_store(self) -> None:
        assert self.store is not None
        await asyncio.to_thread(self.store.kill)

    async def restart_store(self) -> None:
        """Starts the store again on its ports over its data; returns once it answers."""
        assert self.store is not None
        await asyncio.to_thread(self.store.restart)

    async def ensure_up(self) -> list[str]:
        """Brings back the database, the store and any service that died on its own (or was
        left stopped); returns their names."""
        died = []
        if self.postgres is not None and not self.postgres.running:
            died.append("database")
            await self.start_database()
        if self.store is not None and self.store.process.poll() is not None:
            died.append("store")
            await self.restart_store()
        for process in self.processes.processes:
            if not process.alive():
                died.append(process.name)
                await self.restart(process.name)
        return died

    async def stop(self) -> None:
        await self.processes.astop()
        for proxy in self.proxies:
            await proxy.close()
        self.write_logs()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.destroy)
        elif self.database:
            await drop_run_database(self.database)
        if self.store is not None:
            self.store.resume()
            await asyncio.to_thread(self.store.stop)

    def write_logs(self) -> Path:
        logs = self.settings.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        runs = [(run, process.name) for process in self.processes.processes for run in process.runs]
        for index, (run, name) in enumerate(sorted(runs, key=lambda pair: pair[0].started)):
            path = logs / f"{index:03d}-{name}-{run.pid}.log"
            path.write_text("".join(run.output))
        return logs

    def clean(self) -> None:
        shutil.rmtree(self.settings.workdir, ignore_errors=True)
