"""Where a render's finished file goes when the output directory is an object store
(``--output-dir s3://bucket/prefix``): it is rendered and verified in the scratch directory,
then stored as ``<prefix>/<render id>.<container>`` (the render id names the attempt: no two
attempts share a key) in one multipart upload."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore, ProgressCallback, UploadedObject


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
        return await self.store.upload_file(
            source, self.location.bucket, self.key_for(final_name), on_progress=on_progress
        )
