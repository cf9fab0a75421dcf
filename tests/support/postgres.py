"""PostgreSQL for the tests: a database of this run on the shared server, and throwaway clusters.

The shared server is the machine's (127.0.0.1:5432, trust auth; ``VIDEOJOB_TEST_POSTGRES``
overrides the admin URL). Each test run creates ``videojob_test_<pid>_<unix time>_<random>``
and drops it at the end; a run that was killed leaves its database behind, so every run first
drops those whose process is gone or that are older than ``STALE_AFTER_SECONDS``. Tests isolate
from each other with a schema each (``schema_url``).

A test that stops or restarts the database starts a ``ThrowawayCluster`` of its own: ``initdb``
and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` user on a
directory that user owns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import asyncpg

from tests.support.ports import free_port

T = TypeVar("T")

ADMIN_URL = os.environ.get("VIDEOJOB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
DATABASE_PREFIX = "videojob_test_"
STALE_AFTER_SECONDS = 6 * 3600
_RUN_DATABASE = re.compile(rf"^{DATABASE_PREFIX}(\d+)_(\d+)_[0-9a-f]+$")
POSTGRES_USER = "postgres"


class PostgresMissing(RuntimeError):
    pass


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs ``coroutine`` to the end on an event loop of its own thread (callable from sync
    code and from inside a running loop alike)."""
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


def with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


def schema_url(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (asyncpg passes unknown query parameters to the
    server as settings)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}search_path={quote(schema)}"


async def _admin() -> asyncpg.Connection[Any]:
    try:
        return await asyncpg.connect(ADMIN_URL, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise PostgresMissing(
            f"PostgreSQL does not answer at {ADMIN_URL} ({error}). The tests need it: start the "
            "machine's cluster (.ci/run does: pg_ctlcluster --skip-systemctl-redirect "
            "<version> main start) or point VIDEOJOB_TEST_POSTGRES at one."
        ) from error


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_databases(names: list[str], now: float) -> list[str]:
    """The run databases among ``names`` whose run is over: its process is gone, or it is older
    than STALE_AFTER_SECONDS (the pid may have been reused)."""
    stale = []
    for name in names:
        match = _RUN_DATABASE.match(name)
        if match is None:
            continue
        pid, created = int(match[1]), int(match[2])
        if not _process_alive(pid) or now - created > STALE_AFTER_SECONDS:
            stale.append(name)
    return stale


async def create_run_database() -> str:
    """Drops what killed runs left, creates this run's database; its URL."""
    admin = await _admin()
    try:
        names = [
            row["datname"]
            for row in await admin.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", f"{DATABASE_PREFIX}%"
            )
        ]
        for name in stale_databases(names, time.time()):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        name = f"{DATABASE_PREFIX}{os.getpid()}_{int(time.time())}_{secrets.token_hex(3)}"
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(ADMIN_URL, name)


async def drop_run_database(url: str) -> None:
    name = url.rpartition("/")[2]
    admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def create_schema(database_url: str) -> str:
    """A new empty schema in the run's database; a URL whose connections use it."""
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return schema_url(database_url, schema)


def postgres_bindir() -> Path:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], check=True, capture_output=True, text=True
        ).stdout.strip()
        if (Path(bindir) / "initdb").exists():
            return Path(bindir)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise PostgresMissing("initdb not found (pg_config --bindir, /usr/lib/postgresql/*/bin)")
    return Path(candidates[-1]).parent


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", POSTGRES_USER, "--", *command]
    return command


class ThrowawayCluster:
    """A PostgreSQL cluster of one test, on 127.0.0.1 and a free port, trust auth. Blocking
    methods: call them with asyncio.to_thread from a coroutine."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        # Not under pytest's tmp_path: the postgres user cannot enter root's 0700 directories.
        self.root = Path(tempfile.mkdtemp(prefix="videojob-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, user=POSTGRES_USER)
        self.data = self.root / "data"
        self.port = free_port()
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(_as_postgres(list(args)), check=True, capture_output=True, timeout=120)

    def init(self) -> ThrowawayCluster:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            POSTGRES_USER,
            "-A",
            "trust",
            "--no-sync",
        )
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects every client and shuts down cleanly; ``immediate`` is a crash."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
