"""The checksums of a multipart upload, computed as its parts go by (pure, no I/O).

A store cannot report a multipart object's whole-file digest: it never sees the file in one
piece. What it reports is composite, a digest of the parts' digests followed by ``-N`` (N the
number of parts), checked against SeaweedFS 4.48 on HEAD:

- the ETag: MD5 of the concatenated binary MD5s of the parts, in hex (``"<hex>-N"``), reported
  by every S3 implementation for unencrypted objects;
- ``x-amz-checksum-sha256`` with ``x-amz-checksum-type: COMPOSITE`` when the upload was created
  with ``ChecksumAlgorithm=SHA256``: SHA-256 of the concatenated binary SHA-256s of the parts,
  base64 (``"<base64>-N"``); HEAD returns it with ``ChecksumMode=ENABLED``.

The whole file's SHA-256 (hex) is what a job records; the composite ones are what the store
is asked to confirm.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PartDigest:
    md5_hex: str
    sha256_base64: str


@dataclass
class MultipartDigest:
    """Feed it the parts in order (``add_part``); the digests follow."""

    _whole: hashlib._Hash = field(default_factory=hashlib.sha256)
    _part_md5s: list[bytes] = field(default_factory=list)
    _part_sha256s: list[bytes] = field(default_factory=list)
    size: int = 0

    def add_part(self, data: bytes) -> PartDigest:
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        sha256 = hashlib.sha256(data).digest()
        self._whole.update(data)
        self._part_md5s.append(md5)
        self._part_sha256s.append(sha256)
        self.size += len(data)
        return PartDigest(md5.hex(), base64.b64encode(sha256).decode())

    @property
    def parts(self) -> int:
        return len(self._part_md5s)

    @property
    def sha256_hex(self) -> str:
        """The whole file's SHA-256."""
        return self._whole.hexdigest()

    @property
    def composite_etag(self) -> str:
        """The ETag the store reports for the object (without its quotes)."""
        digest = hashlib.md5(b"".join(self._part_md5s), usedforsecurity=False).hexdigest()
        return f"{digest}-{self.parts}"

    @property
    def composite_sha256(self) -> str:
        """The ``x-amz-checksum-sha256`` the store reports for the object."""
        digest = hashlib.sha256(b"".join(self._part_sha256s)).digest()
        return f"{base64.b64encode(digest).decode()}-{self.parts}"
