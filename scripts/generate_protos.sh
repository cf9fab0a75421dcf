#!/usr/bin/env bash
# Regenerates the Python code (and type stubs) for protos/ into OUT_DIR (default: the repo root).
# Proto folders mirror Python packages: protos/videojob/render/v1/render.proto becomes the module
# videojob.render.v1.render_pb2.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export PATH="$(dirname "$PYTHON"):$PATH"
OUT_DIR="${1:-.}"
mapfile -t PROTOS < <(cd protos && find . -name '*.proto' | sed 's|^\./||' | sort)
"$PYTHON" -m grpc_tools.protoc -Iprotos \
    --python_out="$OUT_DIR" --grpc_python_out="$OUT_DIR" \
    --mypy_out="$OUT_DIR" --mypy_grpc_out="$OUT_DIR" \
    "${PROTOS[@]}"
# Every generated folder is a regular package.
find protos -type d | while read -r dir; do
    rel="${dir#protos}"; rel="${rel#/}"
    [ -z "$rel" ] && continue
    touch "$OUT_DIR/$rel/__init__.py"
done
