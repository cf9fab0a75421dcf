"""The RenderSpec ``submit`` sends: a JSON document in camelCase as the HTTP API takes it (a
file, or ``-`` for stdin), or a test pattern from flags. Checked here as the gateway and the
services check it, so a bad spec is a usage error before any call."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videojob.errors import InvalidArgument
from videojob.job_json import http_field, spec_from_json
from videojob.render.v1 import spec_pb2
from videojob.spec_validation import normalize_spec
from videojob_cli.errors import CliError
from videojob_cli.exit_status import ExitStatus


@dataclass(frozen=True)
class PatternFlags:
    """A test pattern and its output, as the flags give them (None: the service's default)."""

    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    container: str | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    faststart: bool | None = None

    def given(self) -> bool:
        return any(value is not None for value in vars(self).values())

    def document(self) -> dict[str, Any]:
        pattern = {
            "durationSeconds": self.duration,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
        }
        output = {
            "container": self.container,
            "videoCodec": self.video_codec,
            "audioCodec": self.audio_codec,
            "crf": self.crf,
            "preset": self.preset,
            "faststart": self.faststart,
        }
        return {
            "source": {"testPattern": _set(pattern)},
            "output": _set(output),
        }


def _set(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def read_spec_document(source: str) -> Any:
    """The JSON at ``source`` (a path, or ``-`` for stdin)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(ExitStatus.USAGE, f"--spec: cannot read {source}: {error}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(ExitStatus.USAGE, f"--spec: {source} is not JSON: {error}") from None


# The flag that sets each field of a test pattern spec, to name it in a refusal.
FLAG_OF_FIELD = {
    "source.testPattern.durationSeconds": "--duration",
    "source.testPattern.width": "--width",
    "source.testPattern.height": "--height",
    "source.testPattern.fps": "--fps",
    "output.container": "--container",
    "output.videoCodec": "--codec",
    "output.audioCodec": "--audio-codec",
    "output.crf": "--crf",
    "output.preset": "--preset",
    "output.faststart": "--faststart",
}


def checked_spec(document: Any, names: Mapping[str, str] | None = None) -> spec_pb2.RenderSpec:
    """The RenderSpec for a camelCase document; a usage error naming the field (as ``names``
    calls it, when it does) otherwise."""
    try:
        spec = spec_from_json(document)
        normalize_spec(spec)
    except InvalidArgument as error:
        field = http_field(error.field)
        label = (names or {}).get(field, field)
        raise CliError(ExitStatus.USAGE, f"{label}: {error.problem}") from None
    return spec


def spec_for(spec_source: str | None, pattern: PatternFlags) -> spec_pb2.RenderSpec:
    if spec_source is not None and pattern.given():
        raise CliError(ExitStatus.USAGE, "--spec and the test pattern flags exclude each other")
    if spec_source is not None:
        return checked_spec(read_spec_document(spec_source))
    if pattern.duration is None:
        raise CliError(ExitStatus.USAGE, "give --spec FILE (or - for stdin), or --duration")
    return checked_spec(pattern.document(), FLAG_OF_FIELD)
