"""A small JSON Schema checker for the subset the gateway's OpenAPI document uses.

Request bodies are checked against the very schemas the OpenAPI document publishes, so the
document and what the routes accept cannot drift apart. Every rejection names the offending
field by its JSON path (``source.testPattern.durationSeconds``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from videojob.errors import InvalidArgument

Schema = Mapping[str, Any]

_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _type_text(type_name: str | list[str]) -> str:
    names = type_name if isinstance(type_name, list) else [type_name]
    return " or ".join(_TYPE_NAMES[name] for name in names)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _is_type(value: Any, type_name: str | list[str]) -> bool:
    if isinstance(type_name, list):
        return any(_is_type(value, name) for name in type_name)
    if type_name == "null":
        return value is None
    if type_name == "object":
        return isinstance(value, dict)
    if type_name == "array":
        return isinstance(value, list)
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if type_name == "integer":
        return isinstance(value, int) or value.is_integer()
    return type_name == "number"


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: true is not 1, and 1 equals 1.0."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    return bool(value == expected)


def _json_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_unicode_text(value: str) -> bool:
    """False for a string holding a lone surrogate (which no UTF-8 can carry)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class SchemaChecker:
    """Checks JSON values against schemas that may ``$ref`` ``#/components/schemas/<Name>``."""

    def __init__(self, components: Mapping[str, Schema]) -> None:
        self._components = components

    def _resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            schema = self._components[name]
        return schema

    def check(self, value: Any, schema: Schema, path: str = "") -> None:
        """Raises InvalidArgument(field=<JSON path>, problem) for the first violation found."""
        schema = self._resolve(schema)
        where = path or "body"
        type_name = schema.get("type")
        if type_name is not None and not _is_type(value, type_name):
            raise InvalidArgument(where, f"must be {_type_text(type_name)}")
        if "const" in schema and not _same(value, schema["const"]):
            raise InvalidArgument(where, f"must be {_json_text(schema['const'])}")
        if "enum" in schema and not any(_same(value, choice) for choice in schema["enum"]):
            choices = ", ".join(_json_text(choice) for choice in schema["enum"])
            raise InvalidArgument(where, f"must be one of {choices}")
        if isinstance(value, str):
            self._check_string(value, schema, where)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            self._check_number(value, schema, where)
        elif isinstance(value, list):
            self._check_array(value, schema, path)
        elif isinstance(value, dict):
            self._check_object(value, schema, path)
        for part in schema.get("allOf", ()):
            self.check(value, part, path)
        if "if" in schema:
            branch = "then" if self.matches(value, schema["if"]) else "else"
            if branch in schema:
                self.check(value, schema[branch], path)

    def matches(self, value: Any, schema: Schema) -> bool:
        try:
            self.check(value, schema)
        except InvalidArgument:
            return False
        return True

    @staticmethod
    def _check_string(value: str, schema: Schema, where: str) -> None:
        if not _is_unicode_text(value):
            # JSON's \ud800 escape reads as a lone UTF-16 surrogate: no character at all.
            raise InvalidArgument(
                where, "must be valid Unicode text (it holds a lone surrogate, such as \\ud800)"
            )
        if len(value) < schema.get("minLength", 0):
            raise InvalidArgument(where, "must not be empty")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise InvalidArgument(where, f"must be at most {schema['maxLength']} characters")

    @staticmethod
    def _check_number(value: float, schema: Schema, where: str) -> None:
        if "minimum" in schema and value < schema["minimum"]:
            raise InvalidArgument(where, f"must be at least {_format_number(schema['minimum'])}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            bound = _format_number(schema["exclusiveMinimum"])
            raise InvalidArgument(where, f"must be greater than {bound}")
        if "maximum" in schema and value > schema["maximum"]:
            raise InvalidArgument(where, f"must be at most {_format_number(schema['maximum'])}")
        if "multipleOf" in schema and value % schema["multipleOf"]:
            bound = _format_number(schema["multipleOf"])
            raise InvalidArgument(where, f"must be a multiple of {bound}")

    def _check_array(self, value: list[Any], schema: Schema, path: str) -> None:
        where = path or "body"
        if len(value) < schema.get("minItems", 0):
            raise InvalidArgument(where, f"needs at least {schema['minItems']} item(s)")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise InvalidArgument(where, f"allows at most {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                self.check(item, schema["items"], _join(path, index))

    def _check_object(self, value: dict[str, Any], schema: Schema, path: str) -> None:
        properties: Mapping[str, Schema] = schema.get("properties", {})
        if schema.get("additionalProperties", True) is False:
            for key in value:
                if key not in properties:
                    raise InvalidArgument(_join(path, key), "is not a known field")
        for key in schema.get("required", ()):
            if key not in value:
                raise InvalidArgument(_join(path, key), "is required")
        count = len(value)
        if count < schema.get("minProperties", 0) or count > schema.get("maxProperties", count):
            names = ", ".join(properties)
            if schema.get("minProperties") == schema.get("maxProperties") == 1:
                raise InvalidArgument(path or "body", f"set exactly one of {names}")
            raise InvalidArgument(path or "body", f"has the wrong number of fields ({names})")
        for key, item in value.items():
            self.check(item, properties.get(key, {}), _join(path, key))
        for key, companions in schema.get("dependentRequired", {}).items():
            for companion in companions:
                if key in value and companion not in value:
                    raise InvalidArgument(_join(path, companion), f"is required with {key}")
