#!/usr/bin/env bash
# make test: the suite with the FFmpeg in use (FFMPEG_BINARY, else the one on PATH, else the
# imageio-ffmpeg wheel's) on TEST_WORKERS pytest-xdist workers, the tests marked serial on one of
# them; and when the FFmpeg in use is not the wheel's, at the same time, the tests marked ffmpeg
# once more with the wheel's on one more worker (most of the suite waits on real processes, so
# the second run fits beside the first). Its output follows the main run's. Extra arguments go
# to the main run.
set -uo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
workers="${TEST_WORKERS:-4}"

# The project's own bytecode, brought up to date (make setup compiled the installed packages'):
# with PYTHONDONTWRITEBYTECODE set, each of the hundreds of service processes the tests start
# would otherwise compile every module of ours it imports.
$python -m compileall -q -j 0 videojob videojob_cli videojob_launcher render_service \
    export_service gateway bench scripts tests || exit 2
# pytest's rewritten test modules are bytecode of their own, which it does not write where
# PYTHONDONTWRITEBYTECODE is set: each worker would rewrite every test module as it collects
# (about 10 s of CPU each). One collection writes them first, two processes at once (half of the
# test folders each, about the same time); the workers then read them. It also lists the tests
# marked ffmpeg, so that the run with the wheel's FFmpeg collects only their files.
unset PYTHONDONTWRITEBYTECODE
listing="$(mktemp -d)"
trap 'rm -rf "$listing"' EXIT
$python -m pytest --collect-only -q -p no:cacheprovider -m ffmpeg tests/export tests/cli \
    tests/chaos tests/bench tests/launcher tests/operations >"$listing/first" 2>&1 &
first_half=$!
$python -m pytest --collect-only -q -p no:cacheprovider -m ffmpeg --ignore=tests/export \
    --ignore=tests/cli --ignore=tests/chaos --ignore=tests/bench --ignore=tests/launcher \
    --ignore=tests/operations >"$listing/second" 2>&1
second_status=$?
wait "$first_half"
first_status=$?
ffmpeg_files=()
# 0: listed; anything else (5: none marked, an error): the wheel's run collects all of tests/.
if [ "$first_status" -eq 0 ] && [ "$second_status" -eq 0 ]; then
    mapfile -t ffmpeg_files < <(cat "$listing/first" "$listing/second" \
        | grep -E '^tests/[^:]+\.py::' | cut -d: -f1 | sort -u)
fi

wheel="$($python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" || exit 2
used="$($python -c 'from videojob.ffmpeg_binary import ffmpeg_binary; print(ffmpeg_binary())')" || exit 2

wheel_pid=""
wheel_log="$listing/wheel"
if [ "$used" != "$wheel" ]; then
    # No cache provider: the main run owns .pytest_cache. Given the files that hold tests marked
    # ffmpeg (all of tests/ when the listing found none: the marker still selects).
    FFMPEG_BINARY="$wheel" $python -m pytest -n 1 -m ffmpeg -p no:cacheprovider \
        "${ffmpeg_files[@]}" >"$wheel_log" 2>&1 &
    wheel_pid=$!
fi

$python -m pytest -n "$workers" --dist loadgroup "$@"
status=$?

if [ -n "$wheel_pid" ]; then
    wait "$wheel_pid"
    wheel_status=$?
    echo
    echo "== the tests marked ffmpeg again, with the wheel's FFmpeg ($wheel) =="
    if [ "$wheel_status" -eq 0 ]; then
        tail -n 3 "$wheel_log"
    else
        cat "$wheel_log"
        echo "the run with the wheel's FFmpeg failed (status $wheel_status)" >&2
        [ "$status" -eq 0 ] && status=$wheel_status
    fi
else
    echo "the main run used the wheel's FFmpeg already: no second run"
fi
exit "$status"
