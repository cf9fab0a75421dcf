"""Fails when a vendored proto under protos/google differs from the definition the installed
googleapis-common-protos registers under the same file name (what the generated code uses at
run time: scripts/generate_protos.sh says why)."""

from __future__ import annotations

import importlib
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_tools import protoc  # type: ignore[import-untyped]

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTOS = REPO_ROOT / "protos"


def _drop_json_names(fields: Iterable[descriptor_pb2.FieldDescriptorProto]) -> None:
    """protoc writes each field's json_name; generated Python code leaves it out."""
    for proto_field in fields:
        proto_field.ClearField("json_name")


def _drop_message_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        _drop_json_names([*message.field, *message.extension])
        _drop_message_json_names(message.nested_type)


def main() -> int:
    # First: the options' extensions (google.api.http, ...) are then known when parsing ours.
    importlib.import_module("google.longrunning.operations_pb2")
    vendored = sorted(
        str(path.relative_to(PROTOS)) for path in (PROTOS / "google").rglob("*.proto")
    )
    with tempfile.TemporaryDirectory() as scratch:
        descriptor_set = Path(scratch) / "vendored.pb"
        include = str(Path(protoc.__file__).parent / "_proto")
        argv = ["protoc", f"-I{PROTOS}", f"-I{include}", f"-o{descriptor_set}", *vendored]
        if protoc.main(argv) != 0:
            print("protoc could not compile the vendored protos", file=sys.stderr)
            return 1
        compiled = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    pool = descriptor_pool.Default()
    differing = []
    for ours in compiled.file:
        theirs = descriptor_pb2.FileDescriptorProto()
        pool.FindFileByName(ours.name).CopyToProto(theirs)
        _drop_json_names(ours.extension)
        _drop_message_json_names(ours.message_type)
        if ours != theirs:
            differing.append(ours.name)
    for name in differing:
        print(f"vendored protos/{name} differs from googleapis-common-protos'", file=sys.stderr)
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
