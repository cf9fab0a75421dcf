"""The peer's worker as a process for a benchmark, and the client app that talks to it.

The worker is ``celery -A bench.celery_peer.app worker --pool=solo --concurrency=1``: the solo
pool runs each task in the worker's own process, with no hop to a forked pool child, which is
Celery at its fastest for one task at a time. Gossip, mingle and heartbeats are off (one worker,
nobody to talk to). It consumes a queue of its own on Redis database 14, and every key the run
writes there carries the queue's name as prefix; ``running_peer`` deletes those keys at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.celery_peer import app as peer_app

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_DB = 14
READY_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Peer:
    """A running worker and the client side: ``app`` sends to the worker's queue."""

    app: Any
    queue: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def render_task(self) -> Any:
        return self.app.tasks[peer_app.RENDER_TASK]


def redis_url() -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def redis_client() -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5)


def redis_reachable() -> bool:
    client = redis.Redis(
        host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=1, socket_timeout=1
    )
    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False
    finally:
        client.close()


def redis_server_version() -> str:
    client = redis_client()
    try:
        info: dict[str, Any] = client.info("server")
        return str(info.get("redis_version", "unknown"))
    finally:
        client.close()


def _log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(peer: Peer) -> None:
    """Until the worker answers a ping (its consumer is then up)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if peer.process.poll() is not None:
            raise RuntimeError(f"the Celery worker exited at start:\n{_log_tail(peer.log)}")
        if peer.app.control.ping(timeout=0.5):
            return
    raise RuntimeError(f"the Celery worker did not answer a ping:\n{_log_tail(peer.log)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a warm shutdown), then SIGKILL after the grace."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _delete_keys(prefix: str) -> int:
    client = redis_client()
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


@contextlib.contextmanager
def running_peer(workdir: Path, env: Mapping[str, str]) -> Iterator[Peer]:
    """Starts a worker with ``env`` added to this process's environment (the ffmpeg wrapper's
    variables), waits until it answers, yields; stops it and deletes the run's keys."""
    queue = f"videojob-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    url = redis_url()
    log = workdir / "celery-worker.log"
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    worker_env = {
        **os.environ,
        **env,
        peer_app.URL_ENV: url,
        peer_app.QUEUE_ENV: queue,
        "PYTHONPATH": python_path,
    }
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.celery_peer.app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        queue,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "warning",
    ]
    app = peer_app.create_app(url, queue)
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            env=worker_env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    peer = Peer(app, queue, process, log)
    try:
        _wait_ready(peer)
        yield peer
    finally:
        _stop(process)
        app.close()
        _delete_keys(peer_app.key_prefix(queue))
