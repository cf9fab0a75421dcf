"""Where a render's finished file goes when the output directory is an object store
(``--output-dir s3://bucket/prefix``): it is rendered and verified in the scratch directory,
then stored as ``<prefix>/<render id>.<container>`` (the render id names the attempt: no two
attempts share a key) in one multipart upload."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from videojob.errors import VideoJobError
from videojob.storage.location import S3Location

if TYPE_CHECKING:
    from videojob.storage.object_store import ObjectStore, ProgressCallback, UploadedObject

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputStore:
    store: ObjectStore
    location: S3Location

    def key_for(self, final_name: str) -> str:
        return self.location.key_for(final_name)

    async def upload(
        self, source: Path, final_name: str, on_progress: ProgressCallback
    ) -> UploadedObject:
        """Answers once the store acknowledged the whole object; aborted (nothing left) on
        failure or cancellation."""
        bucket, key = self.location.bucket, self.key_for(final_name)
        try:
            return await self.store.upload_file(source, bucket, key, on_progress=on_progress)
        except BaseException:
            await self._abandon(bucket, key)
            raise

    async def _abandon(self, bucket: str, key: str) -> None:
        """After a failed or cancelled upload: no unfinished upload of the key stays, not even
        one whose creation was cut off before its answer (so its id was never known). When the
        store does not answer, what is left is logged (an orphan for a sweep)."""
        try:
            aborted = await self.store.abort_uploads_of(bucket, key)
        except VideoJobError as error:
            logger.warning(
                "could not look for unfinished uploads of s3://%s/%s: %s", bucket, key, error
            )
            return
        if aborted:
            logger.info("aborted %d unfinished upload(s) of s3://%s/%s", aborted, bucket, key)
