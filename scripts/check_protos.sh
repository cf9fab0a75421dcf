#!/usr/bin/env bash
# Fails when the committed generated code differs from what protos/ generates now.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
scripts/generate_protos.sh "$tmp"
stale=0
while IFS= read -r generated; do
    rel="${generated#"$tmp"/}"
    if ! cmp -s "$generated" "$rel"; then
        echo "stale generated code: $rel (run 'make proto')" >&2
        stale=1
    fi
done < <(find "$tmp" -type f \( -name '*_pb2*.py' -o -name '*_pb2*.pyi' \))
if ! "${PYTHON:-.venv/bin/python}" scripts/check_vendored_protos.py; then
    stale=1
fi
exit "$stale"
