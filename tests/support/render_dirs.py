"""The two directories a render service process needs: where it writes, and what it may read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RenderDirs:
    output: Path
    media: Path

    @classmethod
    def create(cls, root: Path, output_name: str = "renders") -> RenderDirs:
        dirs = cls(output=root / output_name, media=root / "media")
        dirs.output.mkdir()
        dirs.media.mkdir()
        return dirs
