"""10. The object store (a real SeaweedFS, ``weed mini``), each figure as a ratio to a baseline
measured in the same run:

1. Upload: a file (200 MiB in the full form) through videojob's ``ObjectStore.upload_file``
   (multipart, the whole file's SHA-256 and the store's composite checksum computed as the parts
   go) against a plain S3 PUT of the same file by a raw botocore client through the same S3
   gateway (the fair baseline: same protocol, same gateway and filer, one request and none of
   videojob's work), and against ``weed upload`` (weed's own client, straight to a volume
   server: no S3 gateway, no filer entry; the store's floor).
2. Completion: a small render's ffmpeg exit -> ``completed`` at an SSE client (and create ->
   completed), with the output in the store (``--output-dir s3://...``: the upload and the
   export service's check of the stored object) against a local output directory. The two
   stacks run side by side and take jobs in turn, one at a time.
3. Downloads: one finished job's object read whole through the gateway, streamed (``--downloads
   proxy``) and as a presigned redirect followed (``--downloads redirect``), against a direct GET
   of a presigned link from SeaweedFS; the same object and the same HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import ffmpeg_wrapper
from bench.jobs import create_job, follow_job, test_pattern_spec
from bench.report import BenchResult
from bench.seaweedfs import WEED, SeaweedStore, running_seaweedfs
from bench.stack import running_stack
from bench.stats import median
from videojob.storage.object_store import ObjectStore
from videojob.storage.settings import DEFAULT_PART_BYTES, MIB, MIN_PART_BYTES, StoreSettings
from videojob_launcher import Role, ServiceProcess, Stack, StackConfig, gateway_args, launch

NAME = "object_store"
TITLE = "Object store (SeaweedFS): upload, completion on s3, downloads"

WRITE_CHUNK_BYTES = 8 * MIB
MS = 1000.0


@dataclass(frozen=True)
class Size:
    upload_mib: int
    upload_part_bytes: int  # videojob's part size
    upload_rounds: int
    completion_jobs: int  # per side
    completion_spec: dict[str, Any]
    download_spec: dict[str, Any]
    download_rounds: int


SMALL_SPEC = test_pattern_spec(1.0, 640, 360)
TINY_SPEC = test_pattern_spec(1.0, 160, 120, preset="ultrafast")
SIZES = {
    "full": Size(
        200, DEFAULT_PART_BYTES, 5, 30, SMALL_SPEC, test_pattern_spec(10.0, 1280, 720), 50
    ),
    "quick": Size(20, DEFAULT_PART_BYTES, 1, 2, SMALL_SPEC, SMALL_SPEC, 3),
    # Still an upload of two parts, as the quick form's, of S3's smallest.
    "smoke": Size(6, MIN_PART_BYTES, 1, 1, TINY_SPEC, TINY_SPEC, 1),
}


# --- 1. Upload ---------------------------------------------------------------------------------


def _random_file(path: Path, size: int) -> str:
    """Writes ``size`` random bytes (nothing a store could compress or deduplicate); their
    SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(WRITE_CHUNK_BYTES, left))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


@dataclass
class Upload:
    seconds: float
    # The uploading client's CPU seconds (this process's threads, or weed's own).
    cpu_seconds: float
    sha256: str = ""


class _Timed:
    """Wall-clock and CPU seconds (this process's and its waited-for children's) of a block."""

    def __enter__(self) -> _Timed:
        self._cpu = _cpu_seconds()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.seconds = time.perf_counter() - self._started
        self.cpu_seconds = _cpu_seconds() - self._cpu


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def _videojob_upload(store: SeaweedStore, source: Path, key: str, part_bytes: int) -> Upload:
    """``upload_file`` alone (the client is made before), and the SHA-256 it computed."""
    settings = StoreSettings(
        endpoint=store.endpoint,
        access_key=store.access_key,
        secret_key=store.secret_key,
        part_bytes=part_bytes,
    )
    async with ObjectStore(settings) as objects:
        with _Timed() as timed:
            uploaded = await objects.upload_file(source, store.bucket, key)
    return Upload(timed.seconds, timed.cpu_seconds, uploaded.sha256_hex)


def _plain_put(client: Any, store: SeaweedStore, source: Path, key: str) -> Upload:
    with source.open("rb") as body, _Timed() as timed:
        client.put_object(Bucket=store.bucket, Key=key, Body=body)
    return Upload(timed.seconds, timed.cpu_seconds)


def _weed_upload(store: SeaweedStore, source: Path) -> Upload:
    with _Timed() as timed:
        subprocess.run(
            [str(WEED), "upload", f"-master={store.master}", str(source)],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return Upload(timed.seconds, timed.cpu_seconds)


def _measure_upload(workdir: Path, store: SeaweedStore, size: Size, result: BenchResult) -> None:
    mib, rounds = size.upload_mib, size.upload_rounds
    source = workdir / "upload.bin"
    length = mib * MIB
    expected_sha256 = _random_file(source, length)
    uploads: dict[str, list[Upload]] = {"videojob": [], "put": [], "weed": []}
    checksums_match = True
    client = store.botocore_client()
    try:
        for number in range(rounds):
            # Each round in another order, so that neither side always follows the other.
            order = ["videojob", "put", "weed"]
            order = order[number % 3 :] + order[: number % 3]
            for side in order:
                key = f"bench/upload/{side}-{number}-{secrets.token_hex(3)}"
                if side == "videojob":
                    upload = asyncio.run(
                        _videojob_upload(store, source, key, size.upload_part_bytes)
                    )
                    checksums_match = checksums_match and upload.sha256 == expected_sha256
                elif side == "put":
                    upload = _plain_put(client, store, source, key)
                else:
                    upload = _weed_upload(store, source)
                uploads[side].append(upload)
                if side != "weed":
                    client.delete_object(Bucket=store.bucket, Key=key)
    finally:
        client.close()
    source.unlink()
    videojob, put, weed = (
        median([upload.seconds for upload in uploads[side]]) for side in ("videojob", "put", "weed")
    )
    label = f"upload {mib} MiB"
    result.add(f"{label}: videojob ObjectStore.upload_file", videojob, "s")
    result.add(f"{label}: plain S3 PUT (botocore)", put, "s")
    result.add(f"{label}: weed upload", weed, "s")
    result.add(f"{label}: videojob throughput", length / MIB / videojob, "MiB/s")
    result.add(f"{label}: plain S3 PUT throughput", length / MIB / put, "MiB/s")
    result.add(f"{label}: weed upload throughput", length / MIB / weed, "MiB/s")
    result.add(f"{label}: ratio videojob / plain S3 PUT (time)", videojob / put, "x")
    result.add(f"{label}: ratio videojob / weed upload (time)", videojob / weed, "x")
    result.details["upload"] = {
        "bytes": length,
        "rounds": rounds,
        "seconds": {side: [u.seconds for u in done] for side, done in uploads.items()},
        "client_cpu_seconds": {
            side: [u.cpu_seconds for u in done] for side, done in uploads.items()
        },
        "videojob_sha256_matches_file": checksums_match,
        "videojob_settings": {
            "part_bytes": size.upload_part_bytes,
            "upload_concurrency": StoreSettings().upload_concurrency,
        },
        "plain_put": "one PutObject over http: botocore signs the payload (one SHA-256 pass)",
        "weed_upload": "weed upload -master=...: to a volume server directly (no S3, no filer)",
    }


# --- 2. Completion ------------------------------------------------------------------------------


def _s3_config(
    workdir: Path, location: str, environ: dict[str, str], render_env: dict[str, str]
) -> StackConfig:
    return StackConfig(
        workdir,
        render=Role(
            args=(
                "--output-dir",
                location,
                "--scratch-dir",
                str(workdir / "scratch"),
                "--max-concurrent",
                "1",
            ),
            env={**environ, **render_env},
        ),
        export=Role(args=("--render-output-dir", location), env=environ),
        gateway=Role(args=("--render-output-dir", location), env=environ),
        stop_grace=10.0,
    )


@contextlib.contextmanager
def _stacks(workdir: Path, store: SeaweedStore, render_env: dict[str, str]) -> Iterator[
    tuple[Stack, Stack, str]
]:  # fmt: skip
    """A stack with a local output directory and one with its outputs in the store; and the
    store location."""
    location = f"s3://{store.bucket}/bench/renders"
    (workdir / "s3").mkdir()
    with (
        running_stack(workdir / "local", render_env=render_env, max_concurrent=1) as local,
        Stack(_s3_config(workdir / "s3", location, store.environ(), render_env)) as stored,
    ):
        yield local, stored, location


async def _one_job(stack: Stack, spec: dict[str, Any], log: Path) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        started = time.time()
        job = await create_job(client, spec)
        events = await follow_job(stack.gateway.port, job["id"])
    last = events[-1]
    trace = ffmpeg_wrapper.trace_for(ffmpeg_wrapper.read_traces(log), job["id"])
    exited = trace.exited if trace is not None else float("nan")
    return {
        "outcome": last.name,
        "job": last.job,
        "exit_to_completed": last.received - exited,
        "create_to_completed": last.received - started,
    }


def _measure_completion(
    local: Stack, stored: Stack, log: Path, size: Size, result: BenchResult
) -> dict[str, Any]:
    jobs, spec = size.completion_jobs, size.completion_spec
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "s3": []}
    for number in range(jobs):
        pairs = [("local", local), ("s3", stored)]
        for side, stack in pairs if number % 2 == 0 else pairs[::-1]:
            runs[side].append(asyncio.run(_one_job(stack, spec, log)))
    figures: dict[str, dict[str, float]] = {}
    for side, done in runs.items():
        completed = [run for run in done if run["outcome"] == "completed"]
        figures[side] = {
            "exit": median([run["exit_to_completed"] for run in completed]) * MS,
            "total": median([run["create_to_completed"] for run in completed]) * MS,
        }
    for side, name in (("local", "local directory"), ("s3", "s3")):
        result.add(
            f"completion, output on {name}: exit -> completed, p50", figures[side]["exit"], "ms"
        )
    result.add("completion: ratio s3 / local (exit -> completed, p50)",
               figures["s3"]["exit"] / figures["local"]["exit"], "x")  # fmt: skip
    for side, name in (("local", "local directory"), ("s3", "s3")):
        result.add(f"completion, output on {name}: create -> completed, p50",
                   figures[side]["total"], "ms")  # fmt: skip
    result.add("completion: ratio s3 / local (create -> completed, p50)",
               figures["s3"]["total"] / figures["local"]["total"], "x")  # fmt: skip
    result.details["completion"] = {
        "jobs_per_side": jobs,
        "spec": spec,
        "outcomes": {side: [run["outcome"] for run in done] for side, done in runs.items()},
        "exit_to_completed_ms": {
            side: [run["exit_to_completed"] * MS for run in done] for side, done in runs.items()
        },
        "create_to_completed_ms": {
            side: [run["create_to_completed"] * MS for run in done] for side, done in runs.items()
        },
    }
    return runs


# --- 3. Downloads -------------------------------------------------------------------------------


def _redirecting_gateway(stored: Stack, location: str, store: SeaweedStore) -> ServiceProcess:
    args = gateway_args(
        "127.0.0.1:0",
        stored.export_addr,
        "--render-output-dir",
        location,
        "--downloads",
        "redirect",
    )
    return launch("gateway-redirect", "gateway", args, env=store.environ())


def _timed_get(client: httpx.Client, url: str) -> tuple[float, bytes, int]:
    """Seconds until the whole body is read (a redirect followed, as a browser would); the
    body; the requests made."""
    started = time.perf_counter()
    answer = client.get(url)
    requests = 1
    if answer.status_code in (302, 307):
        answer = client.get(answer.headers["location"])
        requests += 1
    answer.raise_for_status()
    return time.perf_counter() - started, answer.content, requests


def _measure_downloads(
    stored: Stack, location: str, store: SeaweedStore, log: Path, size: Size, result: BenchResult
) -> None:
    spec = size.download_spec
    finished = asyncio.run(_one_job(stored, spec, log))
    job = finished["job"]
    if finished["outcome"] != "completed":
        raise RuntimeError(f"the download's job ended {finished['outcome']}: {job.get('error')}")
    bucket, _, key = str(job["outputPath"]).removeprefix("s3://").partition("/")
    raw = store.botocore_client()
    try:
        direct_url = raw.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600
        )
    finally:
        raw.close()
    redirecting = _redirecting_gateway(stored, location, store)
    path = f"/api/jobs/{job['id']}/download"
    urls = {
        "proxied": stored.url + path,
        "redirect": f"http://127.0.0.1:{redirecting.port}{path}",
        "direct": direct_url,
    }
    rounds = size.download_rounds
    timings: dict[str, list[float]] = {side: [] for side in urls}
    requests: dict[str, int] = {}
    bodies_match = True
    try:
        with httpx.Client(timeout=60, follow_redirects=False) as client:
            for side, url in urls.items():  # one unmeasured read each: connections and caches
                _, body, requests[side] = _timed_get(client, url)
                bodies_match = (
                    bodies_match and hashlib.sha256(body).hexdigest() == job["outputSha256"]
                )
            for number in range(rounds):
                order = list(urls)
                for side in order[number % 3 :] + order[: number % 3]:
                    seconds, _, _ = _timed_get(client, urls[side])
                    timings[side].append(seconds)
    finally:
        redirecting.stop()
    length = int(job["outputSizeBytes"])
    direct = median(timings["direct"])
    names = {"proxied": "gateway, streamed", "redirect": "gateway, presigned redirect followed",
             "direct": "direct GET from SeaweedFS"}  # fmt: skip
    for side, name in names.items():
        p50 = median(timings[side]) * MS
        result.add(f"download {length / MIB:.1f} MiB: {name}, p50", p50, "ms")
    for side in ("proxied", "redirect"):
        result.add(f"download: ratio {names[side]} / direct (p50)",
                   median(timings[side]) / direct, "x")  # fmt: skip
    result.details["downloads"] = {
        "bytes": length,
        "spec": spec,
        "rounds": rounds,
        "requests_per_read": requests,
        "bodies_match_output_sha256": bodies_match,
        "seconds": timings,
        "client": "one httpx.Client (HTTP/1.1, kept-alive connections), whole body read",
    }


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_size(workdir, SIZES["quick" if quick else "full"])


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: one round of each figure, tiny renders."""
    return run_size(workdir, SIZES["smoke"])


def run_size(workdir: Path, size: Size) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    render_env, log = ffmpeg_wrapper.install(workdir)
    with running_seaweedfs() as store:
        _measure_upload(workdir, store, size, result)
        with _stacks(workdir, store, render_env) as (local, stored, location):
            _measure_completion(local, stored, log, size, result)
            _measure_downloads(stored, location, store, log, size, result)
    return result
