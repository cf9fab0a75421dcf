"""Where files live: a local directory or an ``s3://bucket/prefix`` location.

``--media-root`` and ``--output-dir`` values are read here (``videojob.flags.location`` is the
flag kind that does it, so a bad value ends the process naming the flag). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

S3_SCHEME = "s3://"
LOCATION_RULE = "a directory or s3://BUCKET/PREFIX"
# S3's bucket naming rules: 3 to 63 lower-case letters, digits, dots and hyphens, starting and
# ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class BadLocation(ValueError):
    """A value that is not a location; the text says why."""


@dataclass(frozen=True)
class LocalDirectory:
    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; empty: the whole bucket)."""

    bucket: str
    prefix: str = ""

    def key_for(self, name: str) -> str:
        """The object key of ``name`` (a relative path, '/'-separated) under the prefix."""
        relative = _checked_relative_key(name)
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url_of(self, key: str) -> str:
        """``s3://bucket/key``."""
        return f"{S3_SCHEME}{self.bucket}/{key}"

    @property
    def key_prefix(self) -> str:
        """What every key under this location starts with ('' for the whole bucket)."""
        return f"{self.prefix}/" if self.prefix else ""

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}" if self.prefix else self.url_of("")


Location = LocalDirectory | S3Location


def is_stored_object(path: str) -> bool:
    """Whether an output path names an object in a store (``s3://...``), not a file."""
    return path[: len(S3_SCHEME)].lower() == S3_SCHEME


def parse_location(raw: str) -> Location:
    """A location from a flag's text; ``BadLocation`` saying why when it is none."""
    value = raw.strip()
    if not value:
        raise BadLocation("empty")
    if value[: len(S3_SCHEME)].lower() == S3_SCHEME:
        return _parse_s3(value[len(S3_SCHEME) :])
    if _SCHEME.match(value):
        scheme = value.split("://", 1)[0]
        raise BadLocation(f"{scheme}:// is not supported (only s3://)")
    return LocalDirectory(Path(value))


def _parse_s3(rest: str) -> S3Location:
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise BadLocation("no bucket after s3://")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise BadLocation(
            f"bucket {bucket!r} is not a valid S3 bucket name (3 to 63 lower-case letters, "
            "digits, dots and hyphens)"
        )
    prefix = prefix.strip("/")
    if prefix:
        try:
            prefix = _checked_relative_key(prefix)
        except BadLocation as why:
            raise BadLocation(f"prefix {prefix!r}: {why}") from None
    return S3Location(bucket, prefix)


def _checked_relative_key(name: str) -> str:
    parts = PurePosixPath(name).parts
    if name.startswith("/") or not parts:
        raise BadLocation("must be a relative path")
    if "//" in name or any(part in (".", "..") for part in name.split("/")):
        raise BadLocation("has an empty, '.' or '..' segment")
    if "\\" in name or any(ord(character) < 0x20 for character in name):
        raise BadLocation("has a backslash or a control character")
    return name
