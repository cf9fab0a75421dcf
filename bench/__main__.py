"""``python -m bench [--only NAME ...] [--quick] [--merge]``: runs the benchmarks, prints the
table and writes bench/results.json (with ``--merge``, replacing only the results of those that
ran). A benchmark that cannot run is reported as skipped or as an error; the exit status is 0
either way, because benchmarks report and never fail a build."""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import machine
from bench.registry import BENCHMARKS
from bench.report import RESULTS_PATH, BenchResult, merged, result_document, table, write_json

logger = logging.getLogger("bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), help="run only this benchmark"
    )
    parser.add_argument("--quick", action="store_true", help="tiny configurations (a smoke run)")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="the results JSON")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other benchmarks' results in the results JSON and replace only those "
        "that ran (each then says when and where it ran)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    names = args.only or list(BENCHMARKS)
    description = machine.describe()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results: list[BenchResult] = []
    for name in names:
        module = BENCHMARKS[name]
        logger.info("running %s", name)
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"videojob-bench-{name}-") as workdir:
            try:
                result = module.run(Path(workdir), args.quick)
            except Exception as exc:  # noqa: BLE001 (a benchmark reports its failure, the run goes on)
                logger.error("%s failed:\n%s", name, traceback.format_exc())
                result = BenchResult(name, module.TITLE, error=f"{type(exc).__name__}: {exc}")
        result.seconds = round(time.monotonic() - began, 1)
        results.append(result)
        logger.info("%s done in %.1f s", name, result.seconds)
    print(f"\nmachine: {description}")
    print(table(results))
    run = {"started_at": started_at, "quick": args.quick, "machine": description}
    documents = [result_document(result) for result in results]
    if args.merge:
        write_json(merged(args.output, documents, run), args.output)
    else:
        write_json({**run, "results": documents}, args.output)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
