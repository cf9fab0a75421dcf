"""The ``videojob`` command: argument parsing, and one function per command.

Flags that name where the services are (and TLS, deadlines) come from the command line, else
from the environment (``VIDEOJOB_`` plus the flag's name: ``VIDEOJOB_EXPORT_ADDR``), else from
the default, and are checked with the project's flag table (videojob.flags). Those every command
reads may also come before the command (``videojob --export-addr A list``); the command line is
parsed once."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from videojob import limits
from videojob.endpoints import DEFAULT_EXPORT_ADDRESS, DEFAULT_GATEWAY_URL
from videojob.export.v1 import export_pb2
from videojob.flags import (
    Flag,
    FlagError,
    FlagTable,
    Kind,
    choice,
    client_tls_flags,
    http_url,
    integer,
    number,
    target_addresses,
    text,
)
from videojob.grpc_setup import TlsFiles
from videojob.job_json import NOTIFY_EVENTS, STATUS_BY_NAME, history_entry_to_json
from videojob_cli.client import ExportClient, open_channel
from videojob_cli.display import (
    history_line,
    job_details,
    job_json_line,
    job_line,
    job_view,
    status_name,
)
from videojob_cli.download import download, refuse_existing
from videojob_cli.errors import CliError
from videojob_cli.exit_status import ExitStatus, exit_status_table
from videojob_cli.gateway_http import gateway_url
from videojob_cli.spec_input import PatternFlags, spec_for
from videojob_cli.upload import upload, upload_line

PROG = "videojob"
ENV_PREFIX = "VIDEOJOB_"
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_RECONNECT_SECONDS = 30.0
MAX_VERSION = 10**limits.MAX_VERSION_DIGITS - 1

_URL = Kind("an http:// or https:// URL", gateway_url, metavar="URL", ranged=False)

_FLAGS = {
    flag.name: flag
    for flag in (
        Flag(
            "--export-addr",
            target_addresses(),
            DEFAULT_EXPORT_ADDRESS,
            "the export service's address, or its replicas' as a comma-separated list: calls "
            "go round-robin to those serving, a broken watch resumes on another",
        ),
        *client_tls_flags("", "the export service"),
        Flag("--timeout", number(above=0), DEFAULT_TIMEOUT_SECONDS, "deadline of each call"),
        Flag(
            "--reconnect-timeout",
            number(minimum=0),
            DEFAULT_RECONNECT_SECONDS,
            "how long a broken watch keeps resuming after the last message it received",
        ),
        Flag(
            "--gateway-url",
            _URL,
            DEFAULT_GATEWAY_URL,
            "the HTTP gateway files are downloaded from and uploaded to",
        ),
        Flag("--api-token", text("TOKEN"), None, "the gateway's API token, when it has one"),
    )
}
# The flags every command reads: given before the command or after it (after wins).
_CONNECTION = ("--export-addr", "--tls-ca", "--tls-cert", "--tls-key", "--timeout")
_WATCHING = (*_CONNECTION, "--reconnect-timeout")
# download and upload: files go over the gateway's HTTP API.
_OVER_GATEWAY = (*_CONNECTION, "--gateway-url", "--api-token")

_OUTCOME = {
    export_pb2.COMPLETED: ExitStatus.OK,
    export_pb2.FAILED: ExitStatus.JOB_FAILED,
    export_pb2.CANCELLED: ExitStatus.JOB_CANCELLED,
}

Command = Callable[[argparse.Namespace, ExportClient, TextIO], ExitStatus]


def _table(command: str, names: Sequence[str]) -> FlagTable:
    return FlagTable(
        prog=f"{PROG} {command}",
        env_prefix=ENV_PREFIX,
        description="",
        flags=tuple(_FLAGS[name] for name in names),
    )


def _argument_type(kind: Kind) -> Callable[[str], Any]:
    """An argparse ``type`` that converts and checks as ``kind`` does."""

    def convert(raw: str) -> Any:
        try:
            value = kind.convert(raw)
        except (ValueError, KeyError):
            raise argparse.ArgumentTypeError(f"must be {kind.describe}, not {raw!r}") from None
        if not kind.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {kind.describe}, not {raw!r}")
        return value

    return convert


_EPILOG = (
    f"Flags shown with [env ...] can also be set by that variable; the command line wins.\n\n"
    f"{exit_status_table()}"
)


class _Commands:
    """The subcommand parsers, each with the flag table of the flags it reads."""

    def __init__(self) -> None:
        self.parser = argparse.ArgumentParser(
            prog=PROG,
            description=(
                "Submit, follow, list, cancel, delete and download videojob renders;\n"
                "read a job's history; upload input files."
            ),
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        _table(PROG, _CONNECTION).add_to(self.parser)
        self._subparsers = self.parser.add_subparsers(
            dest="command", required=True, metavar="COMMAND"
        )
        self.tables: dict[str, FlagTable] = {}
        self.actions: dict[str, Command] = {}

    def add(
        self,
        name: str,
        summary: str,
        flags: Sequence[str],
        action: Command,
        json_help: str = "one JSON object per line (the API's job object)",
    ) -> argparse.ArgumentParser:
        table = _table(name, flags)
        parser = self._subparsers.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        parser.add_argument("--json", action="store_true", help=json_help)
        # Not given here: left out, so that a value given before the command stays.
        table.add_to(parser, default=argparse.SUPPRESS)
        self.tables[name] = table
        self.actions[name] = action
        return parser


def _build() -> _Commands:
    commands = _Commands()
    submit = commands.add(
        "submit",
        "create a job from a JSON RenderSpec (--spec) or a test pattern (--duration ...)",
        _WATCHING,
        _submit,
    )
    submit.add_argument(
        "--spec",
        metavar="FILE",
        help="the RenderSpec as the HTTP API takes it (JSON, camelCase); - reads stdin",
    )
    number_type = _argument_type(number(above=0, metavar="N"))
    integer_type = _argument_type(integer(minimum=1))
    submit.add_argument("--duration", type=number_type, metavar="SECONDS", help="test pattern")
    submit.add_argument("--width", type=integer_type, metavar="PIXELS")
    submit.add_argument("--height", type=integer_type, metavar="PIXELS")
    submit.add_argument("--fps", type=number_type, metavar="N")
    submit.add_argument(
        "--container",
        type=_argument_type(choice(*limits.CONTAINERS)),
        metavar="{" + ",".join(limits.CONTAINERS) + "}",
    )
    submit.add_argument(
        "--codec",
        "--video-codec",
        dest="video_codec",
        type=_argument_type(choice(*limits.VIDEO_CODECS)),
        metavar="{" + ",".join(limits.VIDEO_CODECS) + "}",
    )
    submit.add_argument(
        "--audio-codec",
        type=_argument_type(choice(*limits.AUDIO_CODECS)),
        metavar="{" + ",".join(limits.AUDIO_CODECS) + "}",
    )
    submit.add_argument(
        "--crf", type=_argument_type(integer(limits.MIN_CRF, limits.MAX_CRF)), metavar="N"
    )
    submit.add_argument(
        "--preset",
        type=_argument_type(choice(*limits.PRESETS)),
        metavar="{" + ",".join(limits.PRESETS) + "}",
    )
    submit.add_argument("--faststart", action="store_true", default=None, help="mp4 only")
    submit.add_argument(
        "--request-id",
        metavar="ID",
        help="idempotency key: the same id again returns the same job (default: a new one)",
    )
    submit.add_argument(
        "--wait", action="store_true", help="follow the job until it ends (exit status below)"
    )
    submit.add_argument(
        "--notify-url",
        type=_argument_type(http_url()),
        metavar="URL",
        help="a webhook endpoint told of the job's changes (docs/webhooks.md); its secret is "
        "printed once, with the created job, and never shown again",
    )
    submit.add_argument(
        "--notify-events",
        type=_argument_type(choice(*NOTIFY_EVENTS)),
        metavar="{" + ",".join(NOTIFY_EVENTS) + "}",
        help="which changes --notify-url is told of: the terminal state (the default) or every "
        "status change",
    )

    watch = commands.add("watch", "follow a job until it ends", _WATCHING, _watch)
    watch.add_argument("id", metavar="ID")
    get = commands.add("get", "show a job", _CONNECTION, _get)
    get.add_argument("id", metavar="ID")
    listing = commands.add("list", "list jobs, newest first", _CONNECTION, _list)
    listing.add_argument(
        "--status",
        type=_argument_type(choice(*limits.API_JOB_STATUSES)),
        metavar="{" + ",".join(limits.API_JOB_STATUSES) + "}",
    )
    listing.add_argument(
        "--limit",
        type=_argument_type(integer(1, limits.MAX_PAGE_SIZE)),
        default=limits.DEFAULT_LIST_LIMIT,
        metavar="N",
        help=f"at most N jobs (1 to {limits.MAX_PAGE_SIZE}; default {limits.DEFAULT_LIST_LIMIT})",
    )
    cancel = commands.add("cancel", "cancel a queued or running job", _CONNECTION, _cancel)
    cancel.add_argument("id", metavar="ID")
    fetch = commands.add(
        "download", "save a completed job's file (over the gateway)", _OVER_GATEWAY, _download
    )
    fetch.add_argument("id", metavar="ID")
    fetch.add_argument(
        "-o", "--output", metavar="FILE", help="where to write it (default ID.CONTAINER; - stdout)"
    )
    fetch.add_argument(
        "-f",
        "--force",
        "--overwrite",
        dest="force",
        action="store_true",
        help="replace the file if it exists (without it, an existing file is kept: exit 6)",
    )
    delete = commands.add(
        "delete",
        "delete a finished job: its record, history and file",
        _CONNECTION,
        _delete,
        json_help='{"id": ID, "deleted": true} once deleted',
    )
    delete.add_argument("id", metavar="ID")
    history = commands.add(
        "history",
        "a job's changes, oldest first, one per version",
        _CONNECTION,
        _history,
        json_help="one JSON object per line (the API's history entry)",
    )
    history.add_argument("id", metavar="ID")
    history.add_argument(
        "--after-version",
        type=_argument_type(integer(0, MAX_VERSION)),
        default=0,
        metavar="N",
        help="only the changes after version N (default: from the first)",
    )
    history.add_argument(
        "--limit",
        type=_argument_type(integer(1, MAX_VERSION)),
        metavar="N",
        help="at most N changes (default: all)",
    )
    send = commands.add(
        "upload",
        "upload a file into the media root (over the gateway): its path is a transcode's input",
        _OVER_GATEWAY,
        _upload,
        json_help="the gateway's answer as one JSON object",
    )
    send.add_argument("file", metavar="FILE", type=Path)
    send.add_argument(
        "--name", metavar="NAME", help="the name it is shown by (default: the file's name)"
    )
    return commands


def _print_job(job: export_pb2.VideoJob, args: argparse.Namespace, out: TextIO) -> None:
    print(job_json_line(job) if args.json else job_line(job), file=out, flush=True)


def _follow(
    client: ExportClient,
    job_id: str,
    args: argparse.Namespace,
    out: TextIO,
    *,
    reachable: bool,
    secret: str = "",
) -> ExitStatus:
    try:
        with job_view(out, as_json=args.json) as view:
            show: Callable[[export_pb2.VideoJob], None] = view.show
            if secret and args.json:
                show = _with_secret_once(view.show, secret)
            final = client.follow(job_id, show, reachable=reachable)
    except KeyboardInterrupt:
        raise CliError(
            ExitStatus.INTERRUPTED, f"stopped following; job {job_id} goes on ({PROG} watch)"
        ) from None
    return _OUTCOME[final.status]


def _submit(args: argparse.Namespace, client: ExportClient, out: TextIO) -> ExitStatus:
    pattern = PatternFlags(
        duration=args.duration,
        width=args.width,
        height=args.height,
        fps=args.fps,
        container=args.container,
        video_codec=args.video_codec,
        audio_codec=args.audio_codec,
        crf=args.crf,
        preset=args.preset,
        faststart=args.faststart,
    )
    spec = spec_for(args.spec, pattern)
    notify = _notify_endpoint(args)
    request_id = args.request_id or f"cli-{uuid.uuid4().hex}"
    try:
        job = client.create(spec, request_id, notify)
    except CliError as error:
        if error.status is ExitStatus.UNREACHABLE:
            error.message += f"; retry with --request-id {request_id} to create it at most once"
        raise
    if not args.wait:
        _print_job(job, args, out)
        _print_secret(job, args, out)
        return ExitStatus.OK
    _print_secret(job, args, out)
    return _follow(client, job.id, args, out, reachable=True, secret=job.notify_secret)


def _with_secret_once(
    show: Callable[[export_pb2.VideoJob], None], secret: str
) -> Callable[[export_pb2.VideoJob], None]:
    """``show`` with the webhook secret set in the first job shown (the watch's answers never
    carry it; only the create's did)."""
    untold = [secret]

    def shown(job: export_pb2.VideoJob) -> None:
        if untold:
            told = export_pb2.VideoJob()
            told.CopyFrom(job)
            told.notify_secret = untold.pop()
            job = told
        show(job)

    return shown


def _notify_endpoint(args: argparse.Namespace) -> export_pb2.WebhookEndpoint | None:
    if not args.notify_url:
        if args.notify_events is not None:
            raise CliError(ExitStatus.USAGE, "--notify-events needs --notify-url")
        return None
    events = NOTIFY_EVENTS[args.notify_events or "terminal"]
    return export_pb2.WebhookEndpoint(url=args.notify_url, events=events)


def _print_secret(job: export_pb2.VideoJob, args: argparse.Namespace, out: TextIO) -> None:
    """The webhook endpoint's secret, on a line of its own (``--json``: the job object's
    ``notifySecret`` instead)."""
    if job.notify_secret and not args.json:
        print(f"notify secret: {job.notify_secret}", file=out, flush=True)


def _watch(args: argparse.Namespace, client: ExportClient, out: TextIO) -> ExitStatus:
    return _follow(client, args.id, args, out, reachable=False)


def _get(args: argparse.Namespace, client: ExportClient, out: TextIO) -> ExitStatus:
    job = client.get(args.id)
    lines = [job_json_line(job)] if args.json else job_details(job)
    print("\n".join(lines), file=out, flush=True)
    return ExitStatus.OK


def _list(args: argparse.Namespace, client: ExportClient, out: TextIO) -> ExitStatus:
    status = STATUS_BY_NAME[args.status] if args.status else export_pb2.JOB_STATUS_UNSPECIFIED
    for job in client.list(status, args.limit):
        _print_job(job, args, out)
    return ExitStatus.OK


def _cancel(args: argparse.Namespace, client: ExportClient, out: TextIO) -> ExitStatus:
    _print_job(client.cancel(args.id), args, out)
    return ExitStatus.OK


def _download(args: argparse.Namespace, client: ExportClient, out: TextIO) -> ExitStatus:
    if args.output and not args.force:
        refuse_existing(args.output)  # before any call: nothing to fetch for it
    job = client.get(args.id)
    if job.status != export_pb2.COMPLETED:
        raise CliError(
            ExitStatus.REFUSED,
            f"job {job.id} is {status_name(job)}; its file exists once it has completed",
        )
    container = job.spec.output.container or limits.DEFAULT_CONTAINER
    destination = args.output or f"{job.id}.{container}"
    size = download(
        args.gateway_url,
        job.id,
        destination,
        api_token=args.api_token,
        timeout=args.timeout,
        overwrite=args.force,
    )
    if destination != "-":
        if args.json:
            print(json.dumps({"id": job.id, "path": destination, "bytes": size}), file=out)
        else:
            print(f"{destination}: {size} bytes", file=out)
    return ExitStatus.OK


def _delete(args: argparse.Namespace, client: ExportClient, out: TextIO) -> ExitStatus:
    client.delete(args.id)
    if args.json:
        print(json.dumps({"id": args.id, "deleted": True}), file=out, flush=True)
    else:
        print(f"{args.id} deleted", file=out, flush=True)
    return ExitStatus.OK


def _history(args: argparse.Namespace, client: ExportClient, out: TextIO) -> ExitStatus:
    after_version = args.after_version
    left = args.limit
    while left is None or left > 0:
        page_size = min(left or limits.MAX_HISTORY_LIMIT, limits.MAX_HISTORY_LIMIT)
        page = client.history(args.id, after_version, page_size)
        for entry in page.entries:
            document = history_entry_to_json(entry)
            if args.json:
                print(json.dumps(document, separators=(",", ":")), file=out, flush=True)
            else:
                print(history_line(document), file=out, flush=True)
        if left is not None:
            left -= len(page.entries)
        if not page.next_after_version or not page.entries:
            break
        after_version = page.next_after_version
    return ExitStatus.OK


def _upload(args: argparse.Namespace, client: ExportClient, out: TextIO) -> ExitStatus:
    document = upload(
        args.gateway_url,
        args.file,
        name=args.name or args.file.name,
        api_token=args.api_token,
        timeout=args.timeout,
    )
    line = json.dumps(document, separators=(",", ":")) if args.json else upload_line(document)
    print(line, file=out, flush=True)
    return ExitStatus.OK


def run(
    argv: Sequence[str] | None = None,
    *,
    channel: grpc.Channel | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Runs one command and returns its exit status. ``channel`` replaces the channel to
    ``--export-addr`` (tests hand in a grpc_testing channel)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    commands = _build()
    try:
        args = commands.parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error argparse has printed
        return exit_request.code if isinstance(exit_request.code, int) else ExitStatus.USAGE
    table = commands.tables[args.command]
    try:
        resolved = table.resolve(args, os.environ if environ is None else environ)
    except FlagError as error:
        print(f"{table.prog}: {error.message}", file=err, flush=True)
        return ExitStatus.USAGE
    vars(args).update(vars(resolved))
    try:
        own_channel = channel is None
        if channel is None:
            tls = TlsFiles(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)
            try:
                channel = open_channel(args.export_addr, tls)
            except OSError as error:
                raise CliError(ExitStatus.USAGE, f"cannot read a TLS file: {error}") from None
            except ValueError as error:
                raise CliError(ExitStatus.USAGE, f"--export-addr: {error}") from None
        try:
            client = ExportClient(
                channel,
                args.export_addr,
                timeout=args.timeout,
                reconnect_seconds=getattr(args, "reconnect_timeout", 0.0),
                sleep=sleep,
            )
            return commands.actions[args.command](args, client, out)
        finally:
            if own_channel:
                channel.close()
    except CliError as error:
        print(f"{table.prog}: {error.message}", file=err, flush=True)
        return error.status
    except KeyboardInterrupt:
        print(f"{table.prog}: interrupted", file=err, flush=True)
        return ExitStatus.INTERRUPTED


def main() -> int:
    """The console script ``videojob``."""
    return run()
