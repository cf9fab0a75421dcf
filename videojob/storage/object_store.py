"""The object store over the S3 API, for every process: multipart uploads that compute the
whole file's SHA-256 and the store's composite checksums as they go, downloads to a local file,
HEAD, delete, listings of keys and of unfinished uploads, aborts, presigned GET links, and the
start-up check.

Built on aiobotocore rather than aioboto3: aioboto3 adds boto3's managed transfers
(``upload_fileobj``) on top of aiobotocore, and those choose the parts and their checksums
themselves, while an upload here must see each part's bytes (the whole file's SHA-256, the
composite checksums, progress by acknowledged part). So this module drives
CreateMultipartUpload / UploadPart / CompleteMultipartUpload itself on the client aioboto3 would
use anyway: one dependency fewer, typed by types-aiobotocore-s3. Plain botocore would block the
event loop on every call.

Every store failure becomes a domain error of ``videojob.errors`` here (``_translated``), and
every call is bounded by ``StoreSettings.timeouts``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Final, NoReturn

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
)

from videojob.errors import (
    ObjectStoreFailed,
    ObjectStoreMisconfigured,
    ObjectStoreUnavailable,
    StoredObjectMissing,
    VideoJobError,
)
from videojob.storage.botocore_data import sharing_data
from videojob.storage.checksums import MultipartDigest, PartDigest
from videojob.storage.location import S3Location
from videojob.storage.settings import (
    ACCESS_KEY_VARIABLE,
    ENDPOINT_VARIABLE,
    MAX_PARTS,
    MIB,
    SECRET_KEY_VARIABLE,
    StoreSettings,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

logger = logging.getLogger(__name__)

DOWNLOAD_CHUNK_BYTES: Final = MIB
DEFAULT_LINK_SECONDS: Final = 3600
# S3 error codes (an answer to HEAD has no body: its code is the HTTP status).
_MISSING_CODES: Final = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchBucket"})
_REFUSED_CREDENTIAL_CODES: Final = {
    "InvalidAccessKeyId": (ACCESS_KEY_VARIABLE, "the store does not know this access key"),
    "SignatureDoesNotMatch": (SECRET_KEY_VARIABLE, "the store refused the secret key"),
    "AccessDenied": (ACCESS_KEY_VARIABLE, "this access key is not allowed here"),
    "403": (ACCESS_KEY_VARIABLE, "the store refused the credentials"),
}

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class UploadedObject:
    """What an upload stored: the whole file's SHA-256 (hex), and the composite checksums the
    store reports for the object (``ObjectInfo.confirms`` compares them)."""

    bucket: str
    key: str
    size: int
    sha256_hex: str
    etag: str
    composite_sha256: str
    parts: int

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class ObjectInfo:
    """What the store reports for an object (HEAD). ``etag`` without its quotes;
    ``checksum_sha256`` None when the store keeps no SHA-256 checksum for it."""

    key: str
    size: int
    etag: str
    checksum_sha256: str | None
    checksum_type: str | None

    def confirms(self, uploaded: UploadedObject) -> bool:
        """The stored object is the one uploaded: same size, and the same SHA-256 checksum when
        the store keeps one, else the same ETag."""
        if self.size != uploaded.size:
            return False
        if self.checksum_sha256 is not None:
            return self.checksum_sha256 == uploaded.composite_sha256
        return self.etag == uploaded.etag


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class UnfinishedUpload:
    key: str
    upload_id: str
    initiated: datetime


class ObjectStore:
    """``async with ObjectStore(settings) as store:``; one per process, shared by its tasks."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        # One botocore session for both clients, reading the data every store of this process
        # shares (the S3 service model is parsed once per process).
        self._session = sharing_data(get_session())
        self._exit_stack = contextlib.AsyncExitStack()
        self._client: S3Client | None = None
        self._link_client: S3Client | None = None

    async def __aenter__(self) -> ObjectStore:
        async with contextlib.AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(self._new_client(self.settings.endpoint))
            link_endpoint = self.settings.public_endpoint or self.settings.endpoint
            self._link_client = await stack.enter_async_context(self._new_client(link_endpoint))
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._client = self._link_client = None
        await self._exit_stack.aclose()

    def _new_client(self, endpoint: str | None) -> contextlib.AbstractAsyncContextManager[S3Client]:
        settings = self.settings
        config = AioConfig(
            connect_timeout=settings.timeouts.connect_seconds,
            read_timeout=settings.timeouts.read_seconds,
            retries={"mode": "standard", "total_max_attempts": settings.timeouts.attempts},
            signature_version="s3v4",
            # Stores other than AWS are reached by address, not by a bucket's DNS name.
            s3={"addressing_style": "path" if endpoint else "auto"},
            # Checksums are sent explicitly (each part's SHA-256); no aws-chunked trailers,
            # which not every S3 implementation takes.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=settings.upload_concurrency + 2,
        )
        client: contextlib.AbstractAsyncContextManager[S3Client] = self._session.create_client(
            "s3",
            endpoint_url=endpoint,
            region_name=settings.region,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            config=config,
        )
        return client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("ObjectStore used outside its 'async with'")
        return self._client

    # --- Start-up ----------------------------------------------------------------------------

    async def check(self, location: S3Location, *, flag: str) -> None:
        """Answers when the credentials may list ``location`` and its bucket exists; else
        ``ObjectStoreMisconfigured`` (one line naming ``flag`` for a missing bucket, the
        variable for refused credentials) or ``ObjectStoreUnavailable`` (naming
        AWS_ENDPOINT_URL). A listing, not a HEAD: a HEAD's refusal has no body to tell a wrong
        key from a wrong secret."""
        try:
            with self._translated("list", str(location)):
                await self.client.list_objects_v2(
                    Bucket=location.bucket, Prefix=location.key_prefix, MaxKeys=1
                )
        except StoredObjectMissing:
            raise ObjectStoreMisconfigured(
                flag,
                f"bucket {location.bucket!r} does not exist at {self.settings.described_endpoint}",
            ) from None

    # --- Objects -----------------------------------------------------------------------------

    async def upload_file(
        self,
        source: Path,
        bucket: str,
        key: str,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> UploadedObject:
        """Stores the file ``source`` as ``key`` in a multipart upload (parts of
        ``settings.part_bytes``, ``settings.upload_concurrency`` at a time), reading it once:
        the whole file's SHA-256 and the composite checksums are computed as the parts go.
        ``on_progress`` gets the bytes the store has acknowledged so far after each part (it
        only rises, and ends at the file's size). Answers once the store has the whole object;
        on any failure (or cancellation) the upload is aborted, as far as the store answers."""
        url = f"s3://{bucket}/{key}"
        size = (await asyncio.to_thread(source.stat)).st_size
        part_bytes = self._part_bytes_for(size)
        with self._translated("upload", url):
            created = await self.client.create_multipart_upload(
                Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256"
            )
        upload_id = created["UploadId"]
        digest = MultipartDigest()
        completing = False
        try:
            parts = await self._upload_parts(
                source, bucket, key, upload_id, part_bytes, digest, on_progress
            )
            completing = True
            with self._translated("upload", url):
                completed = await self.client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            await self._clean_up_after_failure(bucket, key, upload_id, completing=completing)
            raise
        stored_checksum = completed.get("ChecksumSHA256")
        if stored_checksum is not None and stored_checksum != digest.composite_sha256:
            raise ObjectStoreFailed(
                f"the object store stored {url} with checksum {stored_checksum}, "
                f"not {digest.composite_sha256}"
            )
        return UploadedObject(
            bucket=bucket,
            key=key,
            size=digest.size,
            sha256_hex=digest.sha256_hex,
            etag=digest.composite_etag,
            composite_sha256=digest.composite_sha256,
            parts=digest.parts,
        )

    def _part_bytes_for(self, size: int) -> int:
        """The configured part size, or larger (whole MiB) when the file would need more than
        S3's 10,000 parts."""
        needed = math.ceil(size / MAX_PARTS)
        return max(self.settings.part_bytes, math.ceil(needed / MIB) * MIB)

    async def _upload_parts(
        self,
        source: Path,
        bucket: str,
        key: str,
        upload_id: str,
        part_bytes: int,
        digest: MultipartDigest,
        on_progress: ProgressCallback | None,
    ) -> list[CompletedPartTypeDef]:
        url = f"s3://{bucket}/{key}"
        completed: dict[int, CompletedPartTypeDef] = {}
        acknowledged = 0
        # At most this many parts in memory: being read, hashed, or on their way.
        slots = asyncio.Semaphore(self.settings.upload_concurrency)

        async def send(number: int, data: bytes, part: PartDigest) -> None:
            nonlocal acknowledged
            try:
                with self._translated("upload", url):
                    answer = await self.client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                        ChecksumSHA256=part.sha256_base64,
                        ContentMD5=base64.b64encode(bytes.fromhex(part.md5_hex)).decode(),
                    )
            finally:
                slots.release()
            completed[number] = {
                "PartNumber": number,
                "ETag": answer["ETag"],
                "ChecksumSHA256": part.sha256_base64,
            }
            acknowledged += len(data)
            if on_progress is not None:
                on_progress(acknowledged)

        reader = await asyncio.to_thread(source.open, "rb")
        try:
            async with asyncio.TaskGroup() as group:
                number = 0
                while True:
                    await slots.acquire()
                    data, part = await asyncio.to_thread(_read_part, reader, part_bytes, digest)
                    if part is None:
                        slots.release()
                        break
                    number += 1
                    group.create_task(send(number, data, part))
                    if len(data) < part_bytes:
                        break
        except ExceptionGroup as failures:
            # The first part that failed says why; the others failed the same way or were
            # cancelled because of it.
            raise failures.exceptions[0] from None
        finally:
            await asyncio.to_thread(reader.close)
        return [completed[number] for number in sorted(completed)]

    async def _clean_up_after_failure(
        self, bucket: str, key: str, upload_id: str, *, completing: bool
    ) -> None:
        """Aborts an upload that failed, and removes the object too when the completion was
        asked for (it may have been done without its answer arriving). When the store does not
        answer either, what is left stays for the orphan sweep."""
        try:
            await self.abort_upload(bucket, key, upload_id)
            if completing:
                await self.delete(bucket, key)
        except VideoJobError as error:
            logger.warning(
                "could not clean up the failed upload of s3://%s/%s (%s): %s",
                bucket,
                key,
                upload_id,
                error.message,
            )

    async def download_file(self, bucket: str, key: str, destination: Path) -> int:
        """Writes the object to ``destination`` (whole or not at all: a partial file is removed);
        its size."""
        url = f"s3://{bucket}/{key}"
        partial = destination.with_name(f".{destination.name}.partial")
        written = 0
        try:
            with self._translated("download", url):
                answer = await self.client.get_object(Bucket=bucket, Key=key)
                async with answer["Body"] as body:
                    writer = await asyncio.to_thread(partial.open, "wb")
                    try:
                        while chunk := await body.read(DOWNLOAD_CHUNK_BYTES):
                            await asyncio.to_thread(writer.write, chunk)
                            written += len(chunk)
                    finally:
                        await asyncio.to_thread(writer.close)
            await asyncio.to_thread(os.replace, partial, destination)
        except BaseException:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            raise
        return written

    async def read_range(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> AsyncIterator[bytes]:
        """The object's bytes, or those from ``byte_range[0]`` up to (not including)
        ``byte_range[1]``, in chunks of at most DOWNLOAD_CHUNK_BYTES. The store is asked when
        the iteration starts; a failure there is a domain error, as everywhere here."""
        url = f"s3://{bucket}/{key}"
        with self._translated("download", url):
            if byte_range is None:
                answer = await self.client.get_object(Bucket=bucket, Key=key)
            else:
                first, end = byte_range
                answer = await self.client.get_object(
                    Bucket=bucket, Key=key, Range=f"bytes={first}-{end - 1}"
                )
            async with answer["Body"] as body:
                while chunk := await body.read(DOWNLOAD_CHUNK_BYTES):
                    yield chunk

    async def head(self, bucket: str, key: str) -> ObjectInfo:
        """What the store reports for the object; ``StoredObjectMissing`` when it is not
        there."""
        with self._translated("head", f"s3://{bucket}/{key}"):
            answer = await self.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return ObjectInfo(
            key=key,
            size=answer["ContentLength"],
            etag=answer["ETag"].strip('"'),
            checksum_sha256=answer.get("ChecksumSHA256"),
            checksum_type=answer.get("ChecksumType"),
        )

    async def delete(self, bucket: str, key: str) -> None:
        """Removes the object; answers too when it was not there."""
        with self._translated("delete", f"s3://{bucket}/{key}"):
            await self.client.delete_object(Bucket=bucket, Key=key)

    async def list_keys(self, location: S3Location) -> list[str]:
        """The keys of every object under ``location``, in the store's (lexical) order."""
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._translated("list", str(location)):
            async for page in paginator.paginate(
                Bucket=location.bucket, Prefix=location.key_prefix
            ):
                keys.extend(item["Key"] for item in page.get("Contents", ()))
        return keys

    async def list_objects(self, location: S3Location) -> list[ListedObject]:
        """Every object under ``location`` with its size and time of storing, in the store's
        (lexical) order of keys."""
        objects: list[ListedObject] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._translated("list", str(location)):
            async for page in paginator.paginate(
                Bucket=location.bucket, Prefix=location.key_prefix
            ):
                objects.extend(
                    ListedObject(item["Key"], item["Size"], item["LastModified"])
                    for item in page.get("Contents", ())
                )
        return objects

    async def put_small(self, bucket: str, key: str, data: bytes) -> None:
        """Stores ``data`` as ``key`` in one request (a small object: a record, a marker)."""
        with self._translated("put", f"s3://{bucket}/{key}"):
            await self.client.put_object(Bucket=bucket, Key=key, Body=data)

    async def get_small(self, bucket: str, key: str, max_bytes: int) -> bytes:
        """A small object's bytes; ObjectStoreFailed when it holds more than ``max_bytes``."""
        url = f"s3://{bucket}/{key}"
        with self._translated("get", url):
            answer = await self.client.get_object(Bucket=bucket, Key=key)
            data = bytearray()
            async with answer["Body"] as body:
                while chunk := await body.read(DOWNLOAD_CHUNK_BYTES):
                    data += chunk
                    if len(data) > max_bytes:
                        raise ObjectStoreFailed(
                            f"{url} holds more than the {max_bytes} bytes expected"
                        )
        return bytes(data)

    async def list_unfinished_uploads(self, location: S3Location) -> list[UnfinishedUpload]:
        """The multipart uploads under ``location`` that were neither completed nor aborted."""
        uploads: list[UnfinishedUpload] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        with self._translated("list uploads", str(location)):
            async for page in paginator.paginate(
                Bucket=location.bucket, Prefix=location.key_prefix
            ):
                uploads.extend(
                    UnfinishedUpload(item["Key"], item["UploadId"], item["Initiated"])
                    for item in page.get("Uploads", ())
                )
        return uploads

    async def abort_uploads_of(self, bucket: str, key: str) -> int:
        """Aborts every unfinished upload of exactly ``key`` (one whose creation was asked for
        but whose answer never came, after a cancel or a timeout, is unknown to the uploader);
        how many there were."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        upload_ids: list[str] = []
        with self._translated("list uploads", f"s3://{bucket}/{key}"):
            async for page in paginator.paginate(Bucket=bucket, Prefix=key):
                upload_ids.extend(
                    item["UploadId"] for item in page.get("Uploads", ()) if item["Key"] == key
                )
        for upload_id in upload_ids:
            await self.abort_upload(bucket, key, upload_id)
        return len(upload_ids)

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Aborts an unfinished upload (its parts are dropped); answers too when it is gone
        already."""
        try:
            with self._translated("abort", f"s3://{bucket}/{key}"):
                await self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except StoredObjectMissing:
            return

    async def presign_get(
        self, bucket: str, key: str, *, expires_seconds: int = DEFAULT_LINK_SECONDS
    ) -> str:
        """A GET link to the object valid for ``expires_seconds``, naming the public endpoint
        (``--store-public-endpoint``) when there is one; ``Range`` works on it. Computed here,
        without a call to the store."""
        if self._link_client is None:
            raise RuntimeError("ObjectStore used outside its 'async with'")
        link: str = await self._link_client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_seconds
        )
        return link

    # --- Errors ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, operation: str, url: str) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError) as error:
            self._raise_translated(error, operation, url)

    def _raise_translated(self, error: Exception, operation: str, url: str) -> NoReturn:
        """The one mapping of a store failure to a domain error."""
        endpoint = self.settings.described_endpoint
        if isinstance(error, ClientError):
            code = _code_of(error)
            if code in _MISSING_CODES or code == "NoSuchUpload":
                raise StoredObjectMissing(url) from error
            if code in _REFUSED_CREDENTIAL_CODES:
                variable, problem = _REFUSED_CREDENTIAL_CODES[code]
                raise ObjectStoreMisconfigured(
                    variable, f"{problem} ({code} from {endpoint} on {operation} of {url})"
                ) from error
            message = error.response.get("Error", {}).get("Message", "")
            raise ObjectStoreFailed(
                f"the object store at {endpoint} refused {operation} of {url}: {code} {message}"
            ) from error
        if isinstance(error, NoCredentialsError):
            raise ObjectStoreMisconfigured(
                ACCESS_KEY_VARIABLE,
                f"no credentials for the object store ({ACCESS_KEY_VARIABLE} and "
                f"{SECRET_KEY_VARIABLE} are unset)",
            ) from error
        if isinstance(
            error, ConnectionError | HTTPClientError | aiohttp.ClientError | TimeoutError
        ):
            raise ObjectStoreUnavailable(
                f"{ENDPOINT_VARIABLE}: the object store at {endpoint} did not answer "
                f"{operation} of {url} ({error})",
                endpoint=endpoint,
            ) from error
        raise ObjectStoreFailed(f"{operation} of {url} at {endpoint} failed: {error}") from error


def _code_of(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _read_part(
    reader: BinaryIO, part_bytes: int, digest: MultipartDigest
) -> tuple[bytes, PartDigest | None]:
    """The next part of the file and its digests, None past the end (an empty file is one
    empty part). In a worker thread: reading and hashing a part would hold the event loop."""
    data = reader.read(part_bytes)
    if not data and digest.parts > 0:
        return data, None
    return data, digest.add_part(data)
