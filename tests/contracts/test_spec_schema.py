"""The RenderSpec's JSON schema (videojob.spec_schema, which the OpenAPI document publishes and
``POST /api/jobs`` checks bodies against) is written by hand beside spec.proto; this walks the
proto's descriptor and holds the two together:

- every message of a RenderSpec has its component, closed (``additionalProperties: false``),
  with exactly one property per field, under the field's JSON name;
- each property has the field's type: a nested message is a ``$ref`` to its component, a
  repeated field an array of it, a proto3 ``optional`` field may be null, and a ``oneof`` is a
  component with exactly one of its fields;
- each property states exactly the bounds videojob.limits sets for that field (the bounds the
  services enforce, videojob.spec_validation), and the rules that depend on another field
  (each container's codecs and faststart, each codec's crf range) are the limits' tables.

A field added to spec.proto without its place (and its bounds) in the schema fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.openapi import COMPONENT_SCHEMAS
from videojob import limits
from videojob.render.v1 import spec_pb2
from videojob.spec_schema import SPEC_SCHEMAS

REF = "#/components/schemas/"
BOUND_KEYWORDS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "enum",
    "const",
)
JSON_TYPE = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "boolean",
    FieldDescriptor.TYPE_DOUBLE: "number",
    FieldDescriptor.TYPE_FLOAT: "number",
    FieldDescriptor.TYPE_INT32: "integer",
    FieldDescriptor.TYPE_INT64: "integer",
    FieldDescriptor.TYPE_UINT32: "integer",
    FieldDescriptor.TYPE_UINT64: "integer",
    FieldDescriptor.TYPE_SINT32: "integer",
    FieldDescriptor.TYPE_SINT64: "integer",
}

_DURATION = {"minimum": limits.MIN_DURATION_SECONDS, "maximum": limits.MAX_DURATION_SECONDS}
_FPS = {"minimum": limits.MIN_FPS, "maximum": limits.MAX_FPS}
_PATH = {"minLength": 1, "maxLength": limits.MAX_PATH_LENGTH}


def _dimension(bound: int) -> dict[str, Any]:
    return {"minimum": 0, "maximum": bound, "multipleOf": limits.DIMENSION_MULTIPLE}


# Every field of a RenderSpec (message.field), with the bounds its property states on its own
# (those that depend on another field are the allOf rules, checked below).
BOUNDS: dict[str, dict[str, Any]] = {
    "RenderSpec.source": {},
    "RenderSpec.output": {},
    "Source.test_pattern": {},
    "Source.transcode": {},
    "Source.slideshow": {},
    "TestPattern.duration_seconds": _DURATION,
    "TestPattern.width": _dimension(limits.MAX_WIDTH),
    "TestPattern.height": _dimension(limits.MAX_HEIGHT),
    "TestPattern.fps": _FPS,
    "Transcode.input_path": _PATH,
    "Slide.image_path": _PATH,
    "Slide.duration_seconds": _DURATION,
    "Slideshow.slides": {"minItems": limits.MIN_SLIDES, "maxItems": limits.MAX_SLIDES},
    "Slideshow.audio_path": _PATH,
    "Slideshow.subtitles_path": _PATH,
    "OutputSpec.container": {"enum": list(limits.CONTAINERS)},
    "OutputSpec.video_codec": {},  # each container's own: allOf
    "OutputSpec.audio_codec": {},  # each container's own: allOf
    "OutputSpec.width": _dimension(limits.MAX_WIDTH),
    "OutputSpec.height": _dimension(limits.MAX_HEIGHT),
    "OutputSpec.fps": _FPS,
    # The widest any codec allows; each codec's own range is an allOf rule.
    "OutputSpec.crf": {"minimum": limits.MIN_CRF, "maximum": limits.MAX_CRF},
    "OutputSpec.preset": {"enum": list(limits.PRESETS)},
    "OutputSpec.faststart": {},  # false outside the faststart containers: allOf
    "OutputSpec.split": {},
    # The widest --split-max-parts allows (the export service's flag may set less).
    "Split.parts": {"minimum": 0, "maximum": limits.MAX_SPLIT_PARTS},
}
# The render kinds internal to the system (a part of a split render, a join): clients can't
# write them, so the schema has no place for them (a body naming one is refused as unknown).
INTERNAL_ONEOF = "internal"


def _internal(field: FieldDescriptor) -> bool:
    oneof = field.containing_oneof
    return oneof is not None and oneof.name == INTERNAL_ONEOF


def _client_fields(descriptor: Descriptor) -> list[FieldDescriptor]:
    return [field for field in descriptor.fields if not _internal(field)]


def _messages(descriptor: Descriptor) -> dict[str, Descriptor]:
    """Every message a client's RenderSpec holds (itself included), by name."""
    found = {descriptor.name: descriptor}
    for field in _client_fields(descriptor):
        if field.message_type is not None and field.message_type.name not in found:
            found.update(_messages(field.message_type))
    return found


MESSAGES = _messages(spec_pb2.RenderSpec.DESCRIPTOR)
FIELDS = {
    f"{message.name}.{field.name}": (message, field)
    for message in MESSAGES.values()
    for field in _client_fields(message)
}


def _optional(field: FieldDescriptor) -> bool:
    """A proto3 ``optional`` field (its own synthetic oneof)."""
    oneof = field.containing_oneof
    return oneof is not None and oneof.name == f"_{field.name}" and len(oneof.fields) == 1


def _property(message: Descriptor, field: FieldDescriptor) -> dict[str, Any]:
    properties: dict[str, Any] = SPEC_SCHEMAS[message.name]["properties"]
    assert field.json_name in properties, f"{message.name}.{field.name}: no {field.json_name}"
    schema: dict[str, Any] = properties[field.json_name]
    return schema


def test_the_schema_is_the_openapi_documents() -> None:
    for name, schema in SPEC_SCHEMAS.items():
        assert COMPONENT_SCHEMAS[name] is schema


def test_every_message_has_a_closed_component_with_a_property_per_field() -> None:
    assert set(MESSAGES) == set(SPEC_SCHEMAS)
    for name, message in MESSAGES.items():
        schema = SPEC_SCHEMAS[name]
        assert schema["type"] == "object", name
        assert schema["additionalProperties"] is False, name
        assert set(schema["properties"]) == {
            field.json_name for field in _client_fields(message)
        }, name
        for required in schema.get("required", ()):
            assert required in schema["properties"], (name, required)


def test_every_field_has_its_bounds_stated() -> None:
    assert set(FIELDS) == set(BOUNDS), "a field of spec.proto without its bounds here"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_property_has_the_fields_type_and_bounds(name: str) -> None:
    message, field = FIELDS[name]
    schema = _property(message, field)
    if field.is_repeated:
        assert schema["type"] == "array", name
        items = schema["items"]
    else:
        assert "items" not in schema, name
        items = schema
    if field.message_type is not None:
        assert items == {"$ref": REF + field.message_type.name}, name
    elif field.enum_type is not None:
        assert items["type"] == "string", name
        assert set(items["enum"]) == {value.name for value in field.enum_type.values}, name
    else:
        json_type = JSON_TYPE[field.type]
        assert items["type"] == ([json_type, "null"] if _optional(field) else json_type), name
    stated = {keyword: schema[keyword] for keyword in BOUND_KEYWORDS if keyword in schema}
    assert stated == BOUNDS[name], name


def test_a_oneof_is_a_component_with_exactly_one_of_its_fields() -> None:
    for name, message in MESSAGES.items():
        oneofs = [
            oneof
            for oneof in message.oneofs
            if not _optional(oneof.fields[0]) and oneof.name != INTERNAL_ONEOF
        ]
        schema = SPEC_SCHEMAS[name]
        if not oneofs:
            assert "maxProperties" not in schema, name
            continue
        (oneof,) = oneofs
        assert [field.name for field in oneof.fields] == [field.name for field in message.fields]
        assert (schema["minProperties"], schema["maxProperties"]) == (1, 1), name


def test_the_crf_envelope_is_the_widest_codec_range() -> None:
    lows, highs = zip(*limits.CRF_RANGE_BY_CODEC.values(), strict=True)
    assert (min(lows), max(highs)) == (limits.MIN_CRF, limits.MAX_CRF)


def _rules() -> dict[tuple[tuple[str, Any], ...], dict[str, Any]]:
    """OutputSpec's allOf rules: the values they apply to (property: const) -> their bounds."""
    rules: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
    output = SPEC_SCHEMAS["OutputSpec"]
    for rule in output["allOf"]:
        condition = tuple(
            sorted((name, test["const"]) for name, test in rule["if"]["properties"].items())
        )
        then = rule["then"]["properties"]
        assert set(then) <= set(output["properties"]), condition
        assert condition not in rules, condition
        rules[condition] = then
    return rules


def test_the_rules_across_fields_are_the_limits_tables() -> None:
    expected: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
    for container in limits.CONTAINERS:
        allowed: dict[str, Any] = {
            "videoCodec": {"enum": list(limits.VIDEO_CODECS_BY_CONTAINER[container])},
            "audioCodec": {"enum": list(limits.AUDIO_CODECS_BY_CONTAINER[container])},
        }
        if container not in limits.FASTSTART_CONTAINERS:
            allowed["faststart"] = {"enum": [False]}
        expected[(("container", container),)] = allowed
        for codec in limits.VIDEO_CODECS_BY_CONTAINER[container]:
            low, high = limits.CRF_RANGE_BY_CODEC[codec]
            crf = {"type": ["integer", "null"], "minimum": low, "maximum": high}
            expected[(("container", container), ("videoCodec", codec))] = {"crf": crf}
    assert _rules() == expected


def test_the_internal_render_kinds_have_no_place_in_a_clients_spec() -> None:
    internal = [
        field.json_name for field in spec_pb2.RenderSpec.DESCRIPTOR.fields if _internal(field)
    ]
    assert internal == ["part", "join", "audio"]
    assert not set(internal) & set(SPEC_SCHEMAS["RenderSpec"]["properties"])
    assert not {"SplitPart", "SplitJoin"} & set(SPEC_SCHEMAS)
