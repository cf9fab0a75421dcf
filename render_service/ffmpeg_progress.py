"""Parsing of FFmpeg's ``-progress`` output: ``key=value`` lines, one block per report,
each block ended by ``progress=continue`` or ``progress=end``. ``N/A`` values are skipped."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressBlock:
    frame: int | None = None
    fps: float | None = None
    speed: float | None = None
    out_time_seconds: float | None = None
    total_size: int | None = None
    ended: bool = False


def _number(value: str) -> float | None:
    try:
        return float(value.rstrip("x"))
    except ValueError:
        return None


class ProgressParser:
    """Feed it lines; it returns a block whenever one is complete."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def feed(self, line: str) -> ProgressBlock | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        value = value.strip()
        if key != "progress":
            if value and value != "N/A":
                self._values[key] = value
            return None
        values, self._values = self._values, {}
        return _block(values, ended=value == "end")


def _block(values: dict[str, str], *, ended: bool) -> ProgressBlock:
    out_time: float | None = None
    if "out_time_us" in values:
        micros = _number(values["out_time_us"])
        out_time = None if micros is None else micros / 1_000_000
    elif "out_time_ms" in values:  # despite its name, FFmpeg writes microseconds here
        micros = _number(values["out_time_ms"])
        out_time = None if micros is None else micros / 1_000_000
    if out_time is not None:
        out_time = max(out_time, 0.0)
    frame = _number(values.get("frame", ""))
    total_size = _number(values.get("total_size", ""))
    return ProgressBlock(
        frame=None if frame is None else int(frame),
        fps=_number(values.get("fps", "")),
        speed=_number(values.get("speed", "")),
        out_time_seconds=out_time,
        total_size=None if total_size is None else int(total_size),
        ended=ended,
    )
