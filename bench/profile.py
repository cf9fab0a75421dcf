"""Profiles a running service with py-spy and prints its hottest frames:
``python -m bench.profile --pid PID [--seconds 15]``. Used while a benchmark loads the
service (see docs/performance.md)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path


def hottest(folded: Path, top: int) -> str:
    """Self and inclusive shares of the frames in py-spy's raw (folded) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive (project frames):")
    project = [
        (frame, n)
        for frame, n in inclusive.most_common()
        if any(name in frame for name in ("export_service", "gateway", "render_service"))
    ]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in project[:top]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as directory:
        folded = Path(directory) / "profile.folded"
        command = [py_spy, "record", "-p", str(args.pid), "-d", str(args.seconds), "-r", "50"]
        subprocess.run(
            [*command, "-f", "raw", "-o", str(folded)],
            check=True,
            capture_output=True,
        )
        print(hottest(folded, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
