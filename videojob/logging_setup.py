"""Logging as every videojob process sets it up, from its ``__main__`` only.

Two formats. ``text``: one human line per record on stderr, as before. ``json``: one JSON object
per line (structlog's ProcessorFormatter over the standard ``logging`` records, so every module
keeps ``logging.getLogger(__name__)``) with ``time``, ``level``, ``logger``, ``message``, the
fields bound to the current task (``bind_log_context``: ``job_id``, ``render_id``, ``attempt``),
the process's ``replica``, the current ``trace_id``/``span_id`` when a trace is recorded, and any
``extra=`` given to the call (such as ``log_tail``), except uvicorn's ``color_message`` (its
message again, with ANSI colour escapes for a terminal).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Final

from opentelemetry import trace

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS: Final = ("text", "json")
# ``extra=`` fields that the text format prints too, each on the lines after the message.
TEXT_EXTRA_BLOCKS: Final = ("log_tail",)

# ``extra=`` fields that only repeat the message for a terminal.
TERMINAL_ONLY_EXTRAS: Final = ("color_message",)

_process_fields: dict[str, str] = {}
# The fields bound to the current task (a task starts with a copy of its parent's context).
_bound_fields: ContextVar[Mapping[str, object]] = ContextVar(
    "videojob_log_fields", default=MappingProxyType({})
)


def bind_log_context(**fields: object) -> None:
    """Adds ``fields`` to every record logged from now on in the current task (and in the tasks
    it starts); another task's records are not affected."""
    _bound_fields.set({**_bound_fields.get(), **fields})


def _add_bound_fields(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in _bound_fields.get().items():
        event.setdefault(key, value)
    return event


def set_replica(name: str) -> None:
    """Names this process (an export writer, a render instance) in every JSON record."""
    if name:
        _process_fields["replica"] = name


def _add_process_fields(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in _process_fields.items():
        event.setdefault(key, value)
    return event


def _drop_terminal_only_extras(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for name in TERMINAL_ONLY_EXTRAS:
        event.pop(name, None)
    return event


def _add_trace(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


class TextFormatter(logging.Formatter):
    """``LOG_FORMAT``, followed by the multi-line ``extra=`` blocks a record carries."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for name in TEXT_EXTRA_BLOCKS:
            block = getattr(record, name, None)
            if block:
                line = f"{line}\n{name}:\n{block}"
        return line


def json_formatter() -> logging.Formatter:
    # Imported for this format only: structlog imports rich (and rich, pygments and attrs),
    # about 60 ms of every process's start.
    import structlog

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            _add_bound_fields,
            structlog.stdlib.ExtraAdder(),
            _drop_terminal_only_extras,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
            _add_process_fields,
            _add_trace,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.EventRenamer("message"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def configure_logging(level: str, log_format: str = "text") -> None:
    """Records at ``level`` and above go to stderr, one line each (``text``: the extra blocks
    on the lines after), as ``log_format`` says."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else TextFormatter(LOG_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
