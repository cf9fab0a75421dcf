"""The checks a split job's files pass besides the ordinary output check (verification.py).

A part: decoded end to end without an error, holding exactly its planned frames. The parts
before a join: each one's video read as stored, all of the same form (codec, size, time base,
codec headers: the same encoder settings), their frames adding up to the plan's total. An audio
render's file: audio only, as long as the output's video within one frame. The joined file: as
many video frames as the plan, every frame where the frame rate puts it (no timestamp gap or
overlap at a join), and the audio lasting as long as the video within one frame."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from render_service.failures import FailureCode, RenderFailure
from render_service.frame_scan import StreamScan, of_type, scan, timeline_fault

COPY_VIDEO = ("-map", "0:v:0", "-c:v", "copy")
# Every frame decoded and listed, none copied out of the decoder (a wrapped frame is a
# reference: listing it costs nothing next to decoding it).
DECODE_VIDEO = ("-map", "0:v:0", "-fps_mode", "passthrough", "-c:v", "wrapped_avframe")


def _failed(message: str) -> RenderFailure:
    return RenderFailure(FailureCode.VERIFICATION_FAILED, message)


async def verify_part(binary: str, path: Path, frame_count: int, first_frame: int) -> None:
    streams = await scan(binary, path, *DECODE_VIDEO)
    video = of_type(streams, "video")
    decoded = len(video.packets) if video is not None else 0
    if decoded != frame_count:
        raise _failed(
            f"the part decodes to {decoded} frames, not its {frame_count} "
            f"(frames {first_frame}..{first_frame + frame_count - 1} of the output)"
            + (": the source ends before them" if decoded < frame_count else "")
        )


@dataclass(frozen=True)
class PartVideo:
    path: Path
    frames: int
    form: str


async def scan_part(binary: str, path: Path, index: int) -> PartVideo:
    streams = await scan(binary, path, *COPY_VIDEO)
    video = of_type(streams, "video")
    if video is None or not video.packets:
        raise _failed(f"part {index} holds no video")
    return PartVideo(path, len(video.packets), video.described())


def check_parts(parts: list[PartVideo], total_frames: int) -> None:
    """The parts can be joined into the plan's frames."""
    first = parts[0]
    for index, part in enumerate(parts[1:], start=1):
        if part.form != first.form:
            raise _failed(
                f"part {index} is not encoded like part 0 ({part.form} against {first.form}): "
                "parts joined without re-encoding need the same encoder settings"
            )
    frames = sum(part.frames for part in parts)
    if frames != total_frames:
        counts = ", ".join(str(part.frames) for part in parts)
        raise _failed(
            f"the {len(parts)} parts hold {frames} frames ({counts}), "
            f"the output {total_frames}: a part is missing or cut short"
        )


def _audio_seconds(stored: StreamScan, decoded: StreamScan | None) -> float:
    """The audio's length: the smaller of its stored packets' (those the decoder keeps) and its
    decoded samples'. Each can only count too much (an encoder's priming or padding that one
    FFmpeg marks in the container and another applies while decoding), never too little."""
    kept = sum(packet.duration for packet in stored.kept)
    seconds = stored.seconds(kept)
    if decoded is not None and decoded.packets:
        seconds = min(seconds, decoded.seconds(sum(p.duration for p in decoded.packets)))
    return seconds


# Every stream as stored, and the first audio stream once more, decoded (one read of the file):
# that copy is the last output stream, the second audio one.
STORED_AND_DECODED_AUDIO = ("-map", "0", "-map", "0:a:0?", "-c", "copy", "-c:a:1", "pcm_s16le")


def _audio_of(streams: dict[int, StreamScan]) -> tuple[StreamScan | None, StreamScan | None]:
    """The stored audio and its decoded copy, of a STORED_AND_DECODED_AUDIO scan."""
    audio = [stream for _, stream in sorted(streams.items()) if stream.media_type == "audio"]
    stored = audio[0] if audio else None
    decoded = audio[-1] if len(audio) > 1 else None
    return stored, decoded


def _check_audio_length(audio_seconds: float, total_frames: int, fps: float, what: str) -> None:
    video_seconds = total_frames / fps
    if abs(audio_seconds - video_seconds) > 1 / fps + 1e-6:
        raise _failed(
            f"{what} lasts {audio_seconds:.3f} s and the video {video_seconds:.3f} s: "
            "more than one frame apart"
        )


async def verify_audio(binary: str, path: Path, total_frames: int, fps: float) -> tuple[int, float]:
    """A split job's audio render: its size and duration, or VERIFICATION_FAILED."""
    streams = await scan(binary, path, *STORED_AND_DECODED_AUDIO)
    audio, decoded = _audio_of(streams)
    if audio is None or not audio.packets or of_type(streams, "video") is not None:
        raise _failed("the audio render's file does not hold audio alone")
    seconds = _audio_seconds(audio, decoded)
    _check_audio_length(seconds, total_frames, fps, "the audio")
    size = (await asyncio.to_thread(path.stat)).st_size
    return size, seconds


async def verify_join(
    binary: str, path: Path, total_frames: int, fps: float, part_frames: list[int]
) -> None:
    streams = await scan(binary, path, *STORED_AND_DECODED_AUDIO)
    video = of_type(streams, "video")
    frames = len(video.packets) if video is not None else 0
    if video is None or frames != total_frames:
        raise _failed(f"the joined file holds {frames} video frames, the plan {total_frames}")
    fault = await asyncio.to_thread(timeline_fault, video, fps)
    if fault is not None:
        boundaries: dict[int, int] = {}
        first = 0
        for index, count in enumerate(part_frames):
            if index:
                boundaries[first] = index
            first += count
        raise _failed(f"the joined video has {fault.describe(boundaries)}")
    audio, decoded = _audio_of(streams)
    if audio is None:
        return
    audio_seconds = _audio_seconds(audio, decoded)
    _check_audio_length(audio_seconds, total_frames, fps, "the audio")
