"""One declarative flag table per process: every flag's type, range, default, help and
environment variable in one place, parsed the same way by the three ``__main__`` modules.

A value comes from the command line, else from the environment variable (the service's
prefix plus the flag's name upper-cased, dashes as underscores: ``--stall-timeout`` of the
export service is ``EXPORT_STALL_TIMEOUT``; an empty variable counts as unset), else from the
default. Every value given, from either place, is checked against its kind; a bad one ends the
process with exit status 2 and one line on stderr naming the flag (and the variable when the
value came from it).
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from videojob.storage.location import LOCATION_RULE, BadLocation, parse_location

EXIT_USAGE = 2
MAX_PORT = 65535
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Kind:
    """What a flag's value is. ``convert`` turns the text into the value (``ValueError``
    when it cannot), ``accepts`` checks the value's range; ``describe`` ends the sentence
    "must be ..." in error messages, and ``--help`` shows it when ``ranged``."""

    describe: str
    convert: Callable[[str], Any]
    accepts: Callable[[Any], bool] = lambda value: True
    metavar: str | None = None
    ranged: bool = True


def text(metavar: str = "TEXT") -> Kind:
    return Kind("a non-empty text", str, lambda value: bool(value), metavar, ranged=False)


def path(metavar: str = "PATH") -> Kind:
    return Kind("a path", Path, lambda value: bool(str(value)), metavar, ranged=False)


def location(metavar: str = "DIR|s3://BUCKET/PREFIX") -> Kind:
    """A local directory or an ``s3://bucket/prefix`` location (``videojob.storage.location``);
    a refusal says why after the usual message."""
    return Kind(LOCATION_RULE, parse_location, metavar=metavar, ranged=False)


def http_url(metavar: str = "URL") -> Kind:
    """Empty, or an ``http://`` or ``https://`` URL with a host."""
    return Kind(
        "empty, or an http:// or https:// URL with a host",
        str,
        lambda value: value == "" or _is_http_url(value),
        metavar,
    )


def webhook_secret() -> Kind:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of at least 16 bytes."""
    return Kind(
        "whsec_ and the base64 of at least 16 random bytes",
        str,
        _is_webhook_secret,
        "whsec_...",
        ranged=False,
    )


def integer(minimum: int | None = None, maximum: int | None = None) -> Kind:
    return Kind(
        _describe_range("an integer", minimum, maximum),
        int,
        lambda value: (
            (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
        ),
        "N",
    )


def number(
    *, minimum: float | None = None, above: float | None = None, metavar: str = "SECONDS"
) -> Kind:
    """A finite number ``>= minimum`` or ``> above``."""
    if above is not None:
        describe = f"a number > {above:g}"
    else:
        describe = _describe_range("a number", minimum, None)

    def accepts(value: float) -> bool:
        return (
            math.isfinite(value)
            and (minimum is None or value >= minimum)
            and (above is None or value > above)
        )

    return Kind(describe, float, accepts, metavar)


def choice(*options: str) -> Kind:
    """One of ``options``, in any letter case (the value is the option as spelled here)."""
    by_folded = {option.casefold(): option for option in options}
    return Kind(
        f"one of {', '.join(options)}",
        lambda raw: by_folded.get(raw.casefold(), raw),
        lambda value: value in options,
        "{" + ",".join(options) + "}",
        ranged=False,
    )


def listen_address() -> Kind:
    """``HOST:PORT`` to bind; port 0 picks a free port."""
    return Kind(
        f"HOST:PORT with a port from 0 to {MAX_PORT}",
        str,
        lambda value: _port_in(value, 0),
        "HOST:PORT",
    )


def target_addresses() -> Kind:
    """``HOST:PORT`` (or comma-separated ones, or a gRPC URI such as ``unix:///path``)."""
    return Kind(
        f"HOST:PORT with a port from 1 to {MAX_PORT} (or a comma-separated list of them)",
        str,
        lambda value: (
            bool(value) and all(("/" in item) or _port_in(item, 1) for item in value.split(","))
        ),
        "HOST:PORT",
    )


# On the command line ``--name`` / ``--no-name``; in the environment 1/0, true/false, yes/no
# or on/off.
BOOLEAN = Kind(
    "one of 1, true, yes, on, 0, false, no, off",
    lambda raw: _parse_boolean(raw),
    ranged=False,
)

LOG_LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Flag:
    name: str
    kind: Kind
    default: Any
    help: str
    # How --help shows a default computed at run time (None: the default itself).
    default_text: str | None = None
    # Given several times on the command line, or as a comma-separated variable: a tuple.
    repeatable: bool = False
    # Flags that must be set too when this one is set.
    requires: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").replace("-", "_")

    def env_suffix(self) -> str:
        return self.dest.upper()


def log_level_flag() -> Flag:
    return Flag("--log-level", choice(*LOG_LEVEL_NAMES), "INFO", "least severe log records kept")


def log_format_flag() -> Flag:
    return Flag(
        "--log-format",
        choice("text", "json"),
        "text",
        "log records as human lines or as JSON lines with job_id, render_id, attempt, replica "
        "and trace_id as fields",
    )


def metrics_listen_flag(default: str = "") -> Flag:
    """``HOST:PORT`` of the Prometheus metrics endpoint; empty turns it off."""
    return Flag(
        "--metrics-listen",
        Kind(
            f"empty, or HOST:PORT with a port from 0 to {MAX_PORT}",
            str,
            lambda value: value == "" or _port_in(value, 0),
            "HOST:PORT",
        ),
        default,
        "serve Prometheus metrics at http://HOST:PORT/metrics (empty: no metrics endpoint)",
    )


def store_public_endpoint_flag() -> Flag:
    """The S3 endpoint that presigned links name, for clients that reach the object store by
    another address than this process does (``AWS_ENDPOINT_URL``)."""
    return Flag(
        "--store-public-endpoint",
        http_url(),
        "",
        "object store endpoint that presigned download links name, when clients reach the "
        "store by another address than AWS_ENDPOINT_URL (empty: that one)",
    )


def scratch_dir_flag() -> Flag:
    """The render service's private work directory: inputs fetched from an object store, and
    files rendered and verified there on their way to one."""
    return Flag(
        "--scratch-dir",
        path("DIR"),
        None,
        "private work directory of this render service when --output-dir or --media-root is "
        "an s3:// location: inputs are fetched and files rendered and verified there, then "
        "stored and removed; never shared with another process (give it one to keep the "
        "instance id of an s3:// output directory across restarts)",
        default_text=(
            "a fresh directory under the system's temporary directory, removed at stop (a "
            "killed service's: at the next render service's start)"
        ),
    )


def server_tls_flags() -> tuple[Flag, ...]:
    """A gRPC server's TLS: its certificate and key, and the CA that client certificates must
    chain to (mutual TLS)."""
    return (
        Flag("--tls-cert", path("PEM"), None, "server certificate", requires=("--tls-key",)),
        Flag("--tls-key", path("PEM"), None, "server private key", requires=("--tls-cert",)),
        Flag(
            "--tls-client-ca",
            path("PEM"),
            None,
            "CA that client certificates must chain to (mutual TLS)",
            requires=("--tls-cert", "--tls-key"),
        ),
    )


def client_tls_flags(peer_flag: str, peer: str) -> tuple[Flag, ...]:
    """A client's TLS towards ``peer``: ``--{peer_flag}-tls-ca`` verifies it,
    ``--{peer_flag}-tls-cert`` and ``--{peer_flag}-tls-key`` are this process's certificate
    for mutual TLS. An empty ``peer_flag`` (a client of one peer only, the CLI): ``--tls-ca``,
    ``--tls-cert``, ``--tls-key``."""
    prefix = f"--{peer_flag}-tls" if peer_flag else "--tls"
    return (
        Flag(f"{prefix}-ca", path("PEM"), None, f"CA that verifies {peer}"),
        Flag(
            f"{prefix}-cert",
            path("PEM"),
            None,
            f"client certificate for {peer}",
            requires=(f"{prefix}-key",),
        ),
        Flag(
            f"{prefix}-key",
            path("PEM"),
            None,
            f"client key for {peer}",
            requires=(f"{prefix}-cert",),
        ),
    )


class FlagError(Exception):
    """A flag's value (or the command line itself) is not acceptable."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error raises instead of printing the usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise FlagError(message)


@dataclass(frozen=True)
class FlagTable:
    prog: str
    env_prefix: str
    description: str
    flags: tuple[Flag, ...]

    def __post_init__(self) -> None:
        names = [flag.name for flag in self.flags]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.prog}: a flag is declared twice")
        for flag in self.flags:
            unknown = set(flag.requires) - set(names)
            if unknown:
                raise ValueError(f"{flag.name} requires undeclared {sorted(unknown)}")

    def env_name(self, flag: Flag) -> str:
        return f"{self.env_prefix}{flag.env_suffix()}"

    def flag(self, name: str) -> Flag:
        for flag in self.flags:
            if flag.name == name:
                return flag
        raise KeyError(name)

    def parser(self) -> argparse.ArgumentParser:
        parser = _OneLineParser(
            prog=self.prog,
            description=f"{self.description} Every flag can also be set by the environment "
            "variable shown; the command line wins over the environment.",
            allow_abbrev=False,
        )
        self.add_to(parser)
        return parser

    def add_to(self, parser: argparse.ArgumentParser, *, default: Any = None) -> None:
        """Declares every flag on ``parser`` (which may be a subcommand's), its help showing its
        range, variable and default. The values stay as given until ``resolve``. A flag not
        given is ``default`` in the namespace; ``argparse.SUPPRESS`` leaves it out, so that
        the same flag given to an enclosing parser (before a subcommand) is kept."""
        for flag in self.flags:
            help_text = self._help(flag).replace("%", "%%")
            if flag.kind is BOOLEAN:
                parser.add_argument(
                    flag.name,
                    dest=flag.dest,
                    action=argparse.BooleanOptionalAction,
                    default=default,
                    help=help_text,
                )
            else:
                parser.add_argument(
                    flag.name,
                    dest=flag.dest,
                    action="append" if flag.repeatable else "store",
                    default=default,
                    metavar=flag.kind.metavar,
                    help=help_text,
                )

    def parse(
        self, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> argparse.Namespace:
        """The value of every flag, by its ``dest``; ``FlagError`` when one is bad."""
        return self.resolve(self.parser().parse_args(argv), environ)

    def resolve(
        self, given: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> argparse.Namespace:
        """The value of every flag, by its ``dest``, from what a parser the flags were added to
        (``add_to``) collected in ``given`` (absent or None: not given), else the environment,
        else the default; ``FlagError`` when one is bad."""
        environ = os.environ if environ is None else environ
        values = argparse.Namespace()
        origins: dict[str, str] = {}
        for flag in self.flags:
            from_command_line = getattr(given, flag.dest, None)
            if from_command_line is not None:
                origin = flag.name
                value = self._command_line_value(flag, from_command_line)
            elif environ.get(self.env_name(flag)):
                origin = f"{flag.name} (from {self.env_name(flag)})"
                value = self._env_value(flag, origin, environ[self.env_name(flag)])
            else:
                value = flag.default
                origin = ""
            if origin:
                origins[flag.name] = origin
            setattr(values, flag.dest, value)
        for flag in self.flags:
            if flag.name not in origins:
                continue
            for needed in flag.requires:
                if needed not in origins:
                    raise FlagError(f"{origins[flag.name]} needs {needed} too")
        return values

    def parse_or_exit(
        self, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> argparse.Namespace:
        """``parse``, but a bad value ends the process: status 2, one line on stderr."""
        try:
            return self.parse(argv, environ)
        except FlagError as error:
            self.exit_with(error.message)

    def exit_with(self, message: str) -> NoReturn:
        """Ends the process as a bad flag does (for checks only ``main`` can make)."""
        print(f"{self.prog}: {message}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE)

    def reference_table(self) -> str:
        """Every flag as a row of a Markdown table (docs/flags.md): the flag, its variable, its
        default, and its help with its range, as ``--help`` shows them."""
        rows = ["| flag | variable | default | meaning |", "| --- | --- | --- | --- |"]
        for flag in self.flags:
            usage = flag.name if flag.kind is BOOLEAN else f"{flag.name} {flag.kind.metavar}"
            cells = (
                f"`{usage}`",
                f"`{self.env_name(flag)}`",
                self._default_text(flag) or "empty",
                self._meaning(flag),
            )
            rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        return "\n".join(rows) + "\n"

    @staticmethod
    def _default_text(flag: Flag) -> str:
        if flag.default_text is not None:
            return flag.default_text
        if flag.default is None or flag.default == ():
            return "unset"
        if flag.kind is BOOLEAN:
            return "on" if flag.default else "off"
        return str(flag.default)

    @staticmethod
    def _meaning(flag: Flag) -> str:
        shape = f"; {flag.kind.describe}" if flag.kind.ranged else ""
        repeat = "; repeatable, comma-separated in the environment" if flag.repeatable else ""
        return f"{flag.help}{shape}{repeat}"

    def _help(self, flag: Flag) -> str:
        default = self._default_text(flag)
        return f"{self._meaning(flag)} [env {self.env_name(flag)}; default {default}]"

    def _command_line_value(self, flag: Flag, given: Any) -> Any:
        if flag.kind is BOOLEAN:
            return bool(given)
        if flag.repeatable:
            return tuple(self._checked(flag, flag.name, item) for item in given)
        return self._checked(flag, flag.name, given)

    def _env_value(self, flag: Flag, origin: str, raw: str) -> Any:
        if flag.repeatable:
            items = [item.strip() for item in raw.split(",")]
            return tuple(self._checked(flag, origin, item) for item in items if item)
        return self._checked(flag, origin, raw)

    @staticmethod
    def _checked(flag: Flag, origin: str, raw: str) -> Any:
        problem = f"{origin} must be {flag.kind.describe}, not {raw!r}"
        try:
            value = flag.kind.convert(raw)
        except BadLocation as why:
            raise FlagError(f"{problem}: {why}") from None
        except (ValueError, KeyError):
            raise FlagError(problem) from None
        if not flag.kind.accepts(value):
            raise FlagError(problem)
        return value


def _describe_range(what: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{what} from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f"{what} >= {minimum:g}"
    if maximum is not None:
        return f"{what} <= {maximum:g}"
    return what


def _port_in(address: str, lowest: int) -> bool:
    host, _, port = address.strip().rpartition(":")
    return (
        bool(host.strip("[]"))
        and port.isascii()
        and port.isdigit()
        and lowest <= int(port) <= MAX_PORT
    )


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number or too big)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_webhook_secret(value: str) -> bool:
    if not value.startswith("whsec_"):
        return False
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except ValueError:
        return False
    return len(key) >= 16


def _parse_boolean(raw: str) -> bool:
    folded = raw.strip().casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError(raw)
