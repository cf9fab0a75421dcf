"""The RenderSpec in the HTTP API's words: its JSON schema (camelCase, the bounds of
videojob.limits), as ``POST /api/jobs`` and the CLI's ``submit --spec`` check a document, and
as the gateway's OpenAPI document publishes it (under ``#/components/schemas``).

Written by hand beside protos/videojob/render/v1/spec.proto; tests/contracts/test_spec_schema.py
walks the proto's descriptor and fails on any field, type or bound the two do not share."""

from __future__ import annotations

from typing import Any

from videojob import limits

# On a property whose maximum is the widest of several: the real bound depends on the named
# field (stated by an allOf rule per value of it).
BOUND_DEPENDS_ON = "x-bound-depends-on"
# On a property whose maximum is the widest an operator may allow: the service enforces its
# flag (named here), which may be lower.
BOUND_SET_BY_FLAG = "x-bound-set-by-flag"
# On OutputSpec: each container's codecs and each video codec's crf range in one plain object,
# for clients (the page) that offer the choices without evaluating the allOf rules.
CODECS_BY_CONTAINER = "x-codecs-by-container"


def _media_path(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": limits.MAX_PATH_LENGTH,
        "description": description,
    }


def _duration(description: str) -> dict[str, Any]:
    return {
        "type": "number",
        "minimum": limits.MIN_DURATION_SECONDS,
        "maximum": limits.MAX_DURATION_SECONDS,
        "description": description,
    }


def _dimension(bound: int, description: str) -> dict[str, Any]:
    return {
        "type": "integer",
        "minimum": 0,
        "maximum": bound,
        "multipleOf": limits.DIMENSION_MULTIPLE,
        "description": description,
    }


# A test pattern's width and height are set together (0 for both means the default).
_SIZE_TOGETHER = {"width": ["height"], "height": ["width"]}


def _codecs_by_container() -> list[dict[str, Any]]:
    """One ``if container is C then codecs of C`` rule per container; a missing container
    is the default one."""
    rules: list[dict[str, Any]] = []
    for container in limits.CONTAINERS:
        condition: dict[str, Any] = {"properties": {"container": {"const": container}}}
        if container != limits.DEFAULT_CONTAINER:
            condition["required"] = ["container"]
        allowed: dict[str, Any] = {
            "videoCodec": {"enum": list(limits.VIDEO_CODECS_BY_CONTAINER[container])},
            "audioCodec": {"enum": list(limits.AUDIO_CODECS_BY_CONTAINER[container])},
        }
        if container not in limits.FASTSTART_CONTAINERS:
            allowed["faststart"] = {"enum": [False]}
        rules.append({"if": condition, "then": {"properties": allowed}})
    return rules


def _crf_by_codec() -> list[dict[str, Any]]:
    """One ``if container is C and videoCodec is V then crf within V's range`` rule per pair
    the document allows (a container's default codec is checked by the service, which names
    ``output.crf`` the same way)."""
    rules: list[dict[str, Any]] = []
    for container in limits.CONTAINERS:
        for codec in limits.VIDEO_CODECS_BY_CONTAINER[container]:
            low, high = limits.CRF_RANGE_BY_CODEC[codec]
            required = ["videoCodec"]
            if container != limits.DEFAULT_CONTAINER:
                required.append("container")
            condition = {
                "required": required,
                "properties": {
                    "container": {"const": container},
                    "videoCodec": {"const": codec},
                },
            }
            crf = {"type": ["integer", "null"], "minimum": low, "maximum": high}
            then = {"properties": {"crf": crf}}
            rules.append({"if": condition, "then": then})
    return rules


def _fps(description: str) -> dict[str, Any]:
    return {
        "type": "number",
        "minimum": limits.MIN_FPS,
        "maximum": limits.MAX_FPS,
        "description": description,
    }


SPEC_SCHEMAS: dict[str, dict[str, Any]] = {
    "RenderSpec": {
        "type": "object",
        "description": "What to render. Input paths are relative to the media root. The "
        "output's pixels per second (width x height x fps) are bounded by the export service's "
        f"--max-pixel-rate (default {limits.DEFAULT_MAX_PIXEL_RATE}: 8K at 30 fps, 4K at 120 "
        "fps): a spec over it is refused with 422 naming its frame rate (`output.fps` when set, "
        "else `source.testPattern.fps`). Where the input files decide the size or the frame "
        "rate, it is not checked.",
        "additionalProperties": False,
        "required": ["source"],
        "properties": {
            "source": {"$ref": "#/components/schemas/Source"},
            "output": {"$ref": "#/components/schemas/OutputSpec"},
        },
    },
    "Source": {
        "type": "object",
        "description": "Exactly one kind of source.",
        "additionalProperties": False,
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {
            "testPattern": {"$ref": "#/components/schemas/TestPattern"},
            "transcode": {"$ref": "#/components/schemas/Transcode"},
            "slideshow": {"$ref": "#/components/schemas/Slideshow"},
        },
    },
    "TestPattern": {
        "type": "object",
        "description": "A synthetic source (testsrc2 plus a sine tone) that needs no files.",
        "additionalProperties": False,
        "required": ["durationSeconds"],
        "dependentRequired": _SIZE_TOGETHER,
        "properties": {
            "durationSeconds": _duration("Length of the video."),
            "width": _dimension(limits.MAX_WIDTH, "0 (with height 0) means 1280."),
            "height": _dimension(limits.MAX_HEIGHT, "0 (with width 0) means 720."),
            "fps": _fps("Frames per second; 30 when left out."),
        },
    },
    "Transcode": {
        "type": "object",
        "additionalProperties": False,
        "required": ["inputPath"],
        "properties": {"inputPath": _media_path("The input file, relative to the media root.")},
    },
    "Slide": {
        "type": "object",
        "additionalProperties": False,
        "required": ["imagePath", "durationSeconds"],
        "properties": {
            "imagePath": _media_path("An image, relative to the media root."),
            "durationSeconds": _duration("How long the slide is shown."),
        },
    },
    "Slideshow": {
        "type": "object",
        "description": (
            f"The slides' durations add up to at most {limits.MAX_DURATION_SECONDS:.0f} seconds."
        ),
        "additionalProperties": False,
        "required": ["slides"],
        "properties": {
            "slides": {
                "type": "array",
                "minItems": limits.MIN_SLIDES,
                "maxItems": limits.MAX_SLIDES,
                "items": {"$ref": "#/components/schemas/Slide"},
            },
            "audioPath": _media_path("Optional soundtrack, relative to the media root."),
            "subtitlesPath": _media_path(
                "Optional text subtitles ffmpeg reads (srt, ass, vtt...), relative to the media "
                "root; anything else (an image, a video without text subtitles) is a 422."
            ),
        },
    },
    "OutputSpec": {
        "type": "object",
        "description": (
            "Omitted fields take the container's defaults ("
            + "; ".join(
                f"{container}: {limits.DEFAULT_VIDEO_CODEC[container]} + "
                f"{limits.DEFAULT_AUDIO_CODEC[container]}"
                for container in limits.CONTAINERS
            )
            + "). The codecs each container allows are listed in allOf."
        ),
        "additionalProperties": False,
        "allOf": [*_codecs_by_container(), *_crf_by_codec()],
        CODECS_BY_CONTAINER: {
            container: {
                "videoCodecs": list(limits.VIDEO_CODECS_BY_CONTAINER[container]),
                "audioCodecs": list(limits.AUDIO_CODECS_BY_CONTAINER[container]),
                "crf": {
                    codec: list(limits.CRF_RANGE_BY_CODEC[codec])
                    for codec in limits.VIDEO_CODECS_BY_CONTAINER[container]
                },
            }
            for container in limits.CONTAINERS
        },
        "properties": {
            "container": {
                "type": "string",
                "enum": list(limits.CONTAINERS),
                "default": limits.DEFAULT_CONTAINER,
            },
            "videoCodec": {"type": "string", "description": "One the container allows."},
            "audioCodec": {"type": "string", "description": "One the container allows."},
            "width": _dimension(
                limits.MAX_WIDTH,
                "0 keeps the source's width; set alone, the height follows the aspect ratio.",
            ),
            "height": _dimension(
                limits.MAX_HEIGHT,
                "0 keeps the source's height; set alone, the width follows the aspect ratio.",
            ),
            "fps": _fps("Output frame rate; the source's when left out."),
            "crf": {
                "type": ["integer", "null"],
                "minimum": limits.MIN_CRF,
                "maximum": limits.MAX_CRF,
                # The largest any codec allows; each codec's own range is an allOf rule.
                BOUND_DEPENDS_ON: "videoCodec",
                "description": "Quality (lower is better); null or left out: the encoder's "
                "default. Its range depends on the video codec: "
                + ", ".join(
                    f"{codec} {low}-{high}"
                    for codec, (low, high) in limits.CRF_RANGE_BY_CODEC.items()
                )
                + ".",
            },
            "preset": {"type": "string", "enum": list(limits.PRESETS)},
            "faststart": {
                "type": "boolean",
                "description": f"{' and '.join(limits.FASTSTART_CONTAINERS)} only.",
            },
            "split": {"$ref": "#/components/schemas/Split"},
        },
    },
    "Split": {
        "type": "object",
        "description": "How to cut the work: render the output in parts in parallel on the "
        "render services, then join them without re-encoding the video. Left out: the "
        "operator's policy decides.",
        "additionalProperties": False,
        "properties": {
            "parts": {
                "type": "integer",
                "minimum": 0,
                "maximum": limits.MAX_SPLIT_PARTS,
                BOUND_SET_BY_FLAG: "--split-max-parts",
                "description": "0: the operator's policy (splits a long enough output when more "
                "than one render slot is free across the pool); 1: never split; N >= 2: N "
                "parts, each of at least one frame. N is bounded by the export service's "
                "--split-max-parts (default 8, at most "
                f"{limits.MAX_SPLIT_PARTS}): more is refused with 422 naming "
                "`output.split.parts`, as is N >= 2 for a job that can't be split safely (a "
                "slideshow, a source with a variable frame rate or an unknown duration, hevc or "
                "av1).",
            },
        },
    },
}
