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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import asyncpg

from videojob import flags
from videojob_launcher import Aborted, LaunchError, RestartPolicy, Role, Stack, StackConfig

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
PLAIN_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

REPO_ROOT = Path(__file__).resolve().parents[1]

# One line at a time on the terminal, whichever thread writes it (the relays are threads).
_OUTPUT_LOCK = threading.Lock()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--render-listen", default=env("VIDEOJOB_RENDER_LISTEN", "127.0.0.1:50051"))
    parser.add_argument("--export-listen", default=env("VIDEOJOB_EXPORT_LISTEN", "127.0.0.1:50052"))
    parser.add_argument(
        "--gateway-listen", default=env("VIDEOJOB_GATEWAY_LISTEN", "127.0.0.1:8080")
    )
    parser.add_argument(
        "--var-dir",
        default=env("VIDEOJOB_VAR_DIR", "var"),
        help="renders, media and the SQLite database live here (relative to the repository)",
    )
    parser.add_argument(
        "--database",
        default=env("VIDEOJOB_DATABASE", ""),
        help="the export services' database URL (default: SQLite in the var directory); "
        "several export replicas need postgresql://USER@HOST:PORT/DB",
    )
    parser.add_argument(
        "--create-database",
        action="store_true",
        help="create the PostgreSQL database of --database if it does not exist",
    )
    for kind, default in (("renders", 1), ("exports", 1), ("gateways", 1)):
        parser.add_argument(
            f"--{kind}",
            type=int,
            default=int(env(f"VIDEOJOB_{kind.upper()}", str(default))),
            help=f"how many {kind[:-1]} processes to start (default {default})",
        )
    restart = RestartPolicy()
    add_flag(
        parser,
        "--restart",
        flags.choice("no", "on-failure", "always"),
        restart.when,
        "when a process exits on its own: start it again on its port when it failed (a "
        "non-zero status or a signal; on-failure), whatever its status (always), or stop them "
        "all (no)",
    )
    add_flag(
        parser,
        "--restart-backoff",
        flags.number(minimum=0),
        restart.backoff,
        "seconds before a process that exited is started again; each further restart within "
        "--restart-interval waits twice as long",
    )
    add_flag(
        parser,
        "--restart-backoff-max",
        flags.number(minimum=0),
        restart.max_backoff,
        "the longest wait before a restart",
    )
    add_flag(
        parser,
        "--restart-burst",
        flags.integer(minimum=1),
        restart.burst,
        "restarts of one process within --restart-interval after which its next exit stops "
        "them all (exit status 1)",
    )
    add_flag(
        parser,
        "--restart-interval",
        flags.number(above=0),
        restart.interval,
        "seconds over which --restart-burst counts a process's restarts",
    )
    args = parser.parse_args(argv)
    if args.restart_backoff_max < args.restart_backoff:
        parser.error("--restart-backoff-max must be >= --restart-backoff")
    return args


def add_flag(
    parser: argparse.ArgumentParser, name: str, kind: flags.Kind, default: object, text: str
) -> None:
    """A flag as videojob.flags declares them: its value checked against ``kind``, taken from
    the command line, else from its environment variable (VIDEOJOB_ and the name), else
    ``default``; --help shows its range, its variable and its default."""
    variable = "VIDEOJOB_" + name.removeprefix("--").replace("-", "_").upper()
    default_text = f"{default:g}" if isinstance(default, float) else str(default)
    shape = f"; {kind.describe}" if kind.ranged else ""
    parser.add_argument(
        name,
        type=checked(kind, variable),
        default=os.environ.get(variable) or default_text,  # a text default goes through type
        metavar=kind.metavar,
        help=f"{text}{shape} [env {variable}; default {default_text}]",
    )


def checked(kind: flags.Kind, variable: str) -> Callable[[str], Any]:
    def convert(raw: str) -> Any:
        problem = f"must be {kind.describe}, not {raw!r} (given here or by {variable})"
        try:
            value = kind.convert(raw)
        except (ValueError, KeyError):
            raise argparse.ArgumentTypeError(problem) from None
        if not kind.accepts(value):
            raise argparse.ArgumentTypeError(problem)
        return value

    return convert


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


def describe(stack: Stack) -> str:
    lines = [f"database: {without_password(stack.database)}"]
    for process in stack.processes:
        lines.append(f"  {process.name:<10} {process.address:<21} pid {process.pid}")
    return "\n".join(lines)


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
    try:
        stack = Stack(
            StackConfig(
                workdir=var_dir,
                database=args.database,
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
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    status = 0
    try:
        stack.start(abort=stop)
        say(describe(stack))
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
    say("videojob stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
