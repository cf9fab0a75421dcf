"""What an uploaded file holds (videojob.media_header), read by FFmpeg in a subprocess: the
event loop never waits on it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.media_header import MediaHeader, header_command, parse_media_header

PROBE_TIMEOUT_SECONDS = 30.0


async def probe_media(path: Path) -> MediaHeader | None:
    """``path``'s media, or None when it holds none (or FFmpeg took too long to say)."""
    process = await asyncio.create_subprocess_exec(
        *header_command(ffmpeg_binary(), path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        return None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    return parse_media_header(stderr.decode(errors="replace"))
