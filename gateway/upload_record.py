"""What the gateway remembers of an upload beside the stored file: the name the client gave it
(for display only, never a path) and what FFmpeg found in it. It is a hidden JSON sidecar,
``uploads/.<stored name>.json``, written whole or not at all before the file takes its name, so
a listed upload either has its record or was stored before records existed. Also the stored
file's extension, chosen from the format FFmpeg found rather than the client's hint.

Every function here blocks: run them in a thread."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videojob.media_header import MediaHeader

logger = logging.getLogger(__name__)

UPLOADS_FOLDER = "uploads"
MAX_ORIGINAL_NAME_LENGTH = 255
# An upload's path as the gateway names it (relative to the media root): nothing else is read.
_UPLOAD_PATH = re.compile(r"uploads/([A-Za-z0-9][A-Za-z0-9._-]{0,99})")
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,10})$")

# FFmpeg's demuxer names (as its header prints them) -> the extensions files of that format
# go by, the usual one first. A format missing here gets no extension: FFmpeg finds it by its
# content again, and no client's hint can make it look like something else.
_EXTENSIONS_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "mov,mp4,m4a,3gp,3g2,mj2": ("mp4", "mov", "m4v", "m4a", "3gp", "3g2", "mj2"),
    "matroska,webm": ("mkv", "webm", "mka", "mk3d"),
    "avi": ("avi",),
    "flv": ("flv",),
    "mpegts": ("ts", "mts", "m2ts"),
    "mpeg": ("mpg", "mpeg", "vob"),
    "asf": ("wmv", "asf", "wma"),
    "ogg": ("ogg", "ogv", "oga", "opus"),
    "mxf": ("mxf",),
    "ivf": ("ivf",),
    "gif": ("gif",),
    "mp3": ("mp3",),
    "wav": ("wav",),
    "flac": ("flac",),
    "aac": ("aac",),
    "aiff": ("aiff", "aif"),
    "png_pipe": ("png",),
    "jpeg_pipe": ("jpg", "jpeg"),
    "webp_pipe": ("webp",),
    "bmp_pipe": ("bmp",),
    "tiff_pipe": ("tif", "tiff"),
}
_WEBM_CODECS = frozenset({"vp8", "vp9", "av1", "opus", "vorbis"})
# Formats of single pictures: a slideshow's slides, nothing to transcode.
_STILL_IMAGE_FORMATS = frozenset({"image2"})
# For files put into the media root by other means than an upload (no record): what a
# transcode takes is guessed from the extension.
_VIDEO_EXTENSIONS = frozenset(
    {"mp4", "m4v", "mov", "mkv", "webm", "avi", "flv", "ts", "mts", "m2ts", "mpg", "mpeg"}
    | {"wmv", "asf", "ogv", "3gp", "3g2", "mxf", "ivf", "gif"}
)


@dataclass(frozen=True)
class UploadRecord:
    original_name: str | None
    info: MediaHeader


def stored_extension(info: MediaHeader, filename_hint: str | None) -> str:
    """``.ext`` for a file of ``info``'s format: the hint's extension when files of that format
    go by it (``clip.MOV`` stays ``.mov``), else the format's usual one (``a.exe`` holding an
    MP4 is ``.mp4``); empty for a format without a known extension."""
    extensions = _EXTENSIONS_BY_FORMAT.get(info.format_name)
    if not extensions:
        return ""
    hinted = _EXTENSION.search(filename_hint or "")
    if hinted and hinted.group(1).lower() in extensions:
        return "." + hinted.group(1).lower()
    return "." + _usual_extension(info, extensions)


def _usual_extension(info: MediaHeader, extensions: tuple[str, ...]) -> str:
    codecs = {codec for codec in (info.video_codec, info.audio_codec) if codec}
    if info.format_name == "matroska,webm":
        if codecs <= _WEBM_CODECS:
            return "webm"
        return "mkv" if info.has_video else "mka"
    if info.format_name.startswith("mov,mp4") and not info.has_video:
        return "m4a"
    if info.format_name == "ogg" and info.has_video:
        return "ogv"
    return extensions[0]


def display_name(filename_hint: str | None) -> str | None:
    """The client's file name as it may be shown: its last path segment, without control,
    format (bidirectional overrides) or unpaired surrogate characters, trimmed, at most
    255 characters; None when nothing is left."""
    if not filename_hint:
        return None
    last = re.split(r"[/\\]", filename_hint)[-1]
    kept = "".join(char for char in last if not unicodedata.category(char).startswith("C"))
    name = kept.strip()[:MAX_ORIGINAL_NAME_LENGTH].strip()
    return name or None


def is_transcodable(info: MediaHeader) -> bool:
    """What a transcode accepts (render_service.render_job): a video stream and a duration;
    a still picture has neither a duration nor frames to transcode."""
    if not info.has_video or info.format_name in _STILL_IMAGE_FORMATS:
        return False
    if info.format_name.endswith("_pipe"):
        return False
    return info.duration_seconds is not None and info.duration_seconds > 0


def looks_transcodable(path: str) -> bool:
    match = _EXTENSION.search(path)
    return match is not None and match.group(1).lower() in _VIDEO_EXTENSIONS


def record_path(stored: Path) -> Path:
    return stored.with_name(record_name(stored.name))


def record_name(stored_name: str) -> str:
    """The name of the record of the upload stored as ``stored_name``, beside it."""
    return f".{stored_name}.json"


def record_json(record: UploadRecord) -> str:
    info = record.info
    return json.dumps(
        {
            "originalName": record.original_name,
            "format": info.format_name,
            "durationSeconds": info.duration_seconds,
            "width": info.width,
            "height": info.height,
            "videoCodec": info.video_codec,
            "audioCodec": info.audio_codec,
        }
    )


def parse_record(text: str, stored_name: str) -> UploadRecord | None:
    """The record in ``text`` (of the upload ``stored_name``), None when it cannot be read."""
    try:
        document: Any = json.loads(text)
        info = MediaHeader(
            format_name=str(document["format"]),
            duration_seconds=_optional(document.get("durationSeconds"), float),
            width=_optional(document.get("width"), int),
            height=_optional(document.get("height"), int),
            video_codec=_optional(document.get("videoCodec"), str),
            audio_codec=_optional(document.get("audioCodec"), str),
        )
    except (ValueError, TypeError, KeyError) as error:
        logger.warning("the record of the upload %s cannot be read: %s", stored_name, error)
        return None
    original = document.get("originalName")
    return UploadRecord(original if isinstance(original, str) else None, info)


def write_record(stored: Path, record: UploadRecord) -> None:
    """The record of the file to be stored at ``stored``, written atomically."""
    target = record_path(stored)
    partial = stored.with_name(f".{uuid.uuid4().hex}.json.part")
    try:
        partial.write_text(record_json(record), encoding="utf-8")
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def remove_record(stored: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        record_path(stored).unlink()


def read_record(stored: Path) -> UploadRecord | None:
    """The record beside ``stored``, or None when there is none (or it cannot be read)."""
    try:
        text = record_path(stored).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("the record of the upload %s cannot be read: %s", stored.name, error)
        return None
    return parse_record(text, stored.name)


def _optional(value: Any, kind: type[Any]) -> Any:
    return None if value is None else kind(value)


def upload_name(path: str) -> str | None:
    """The stored name of ``path`` when it names an upload (``uploads/<stored name>``)."""
    match = _UPLOAD_PATH.fullmatch(path)
    return None if match is None else match.group(1)


def upload_file(media_root: Path, path: str) -> Path | None:
    """The stored file of ``path`` when it names an upload (``uploads/<stored name>``)."""
    name = upload_name(path)
    return None if name is None else media_root / UPLOADS_FOLDER / name


def original_names(media_root: Path, paths: set[str]) -> dict[str, str]:
    """The original names of those ``paths`` that are uploads with a recorded name."""
    names: dict[str, str] = {}
    for path in sorted(paths):
        stored = upload_file(media_root, path)
        record = read_record(stored) if stored is not None else None
        if record is not None and record.original_name:
            names[path] = record.original_name
    return names
