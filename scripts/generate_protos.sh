#!/usr/bin/env bash
# Regenerates the Python code (and type stubs) for protos/videojob into OUT_DIR (default: the
# repo root). Proto folders mirror Python packages: protos/videojob/render/v1/render.proto
# becomes the module videojob.render.v1.render_pb2.
#
# protos/google holds vendored googleapis protos (google/longrunning/operations.proto and the
# google/api and google/rpc files it imports): they are compiled against (-Iprotos) but never
# generated. At run time the generated code's imports (google.longrunning.operations_pb2,
# google.rpc.status_pb2) are googleapis-common-protos' modules, pinned in pyproject to the
# release the vendored files were copied from. Generating our own google.longrunning modules
# would clash with that package, which grpcio-status (and google-api-core) bring in anyway: a
# second definition of google.longrunning.Operation in the process's one descriptor pool is a
# "duplicate symbol" error on import. Its module is named operations_proto_pb2 (operations_pb2
# re-exports it) but registers itself as "google/longrunning/operations.proto", the upstream
# file name, which is why the vendored copy keeps that name: export.proto's dependency is found
# by that name, and one Operation class serves our servicer and any client library.
# scripts/check_vendored_protos.py fails when the two copies differ.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export PATH="$(dirname "$PYTHON"):$PATH"
OUT_DIR="${1:-.}"
mapfile -t PROTOS < <(cd protos && find videojob -name '*.proto' | sort)
"$PYTHON" -m grpc_tools.protoc -Iprotos \
    --python_out="$OUT_DIR" --grpc_python_out="$OUT_DIR" \
    --mypy_out="$OUT_DIR" --mypy_grpc_out="$OUT_DIR" \
    "${PROTOS[@]}"
# Every generated folder is a regular package.
find protos/videojob -type d | while read -r dir; do
    rel="${dir#protos/}"
    touch "$OUT_DIR/$rel/__init__.py"
done
