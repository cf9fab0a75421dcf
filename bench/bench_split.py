"""One long transcode rendered whole against the same job split over render services.

A 2-minute 1280x720 transcode with audio (its source made with FFmpeg once, then reused) is
rendered whole by one render service pinned to one core, then split in as many parts as there
are render services (two here), each render service pinned to a core of its own, and joined, all
on local storage. Both sides include the render service's verification (each part decoded end to
end on the service that made it, the joined and the whole file checked before Completed).

The render services are driven directly over gRPC (the export service's tracking of split jobs
is not used): the parts', the audio's and the join's RenderSpecs are the export service's own
(``split_plan.plan_split``, ``part_spec``, ``audio_spec``, ``join_spec``), and part i runs on
render service i, as the export service places them on an idle pool. The split runs in two
forms: the join encoding the audio after the parts, and the audio rendered apart
(``SplitAudio``) while the parts render, on a service no part uses if there is one, else beside
the part with the fewest frames, the join muxing its file.

Reported: split wall / whole wall (aim <= 0.58, 1.15 x the ideal half), the join's own time,
the PSNR of each output against the source (they should differ by less than 0.3 dB), and what a
short job pays for the policy's decision (one ``plan_split``; it renders whole).

``python -m bench.bench_split --services 4 [--parts 3] --workdir DIR`` runs it alone with 4
render services on 4 cores (and 4 parts unless told); see docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import timeit
from dataclasses import dataclass, replace
from pathlib import Path

from bench.procfs import cpu_seconds_with_children
from bench.report import BenchResult
from export_service import split_plan
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2
from videojob.spec_validation import normalize_spec
from videojob_launcher import Role, Stack, StackConfig

NAME = "split"
TITLE = "A long transcode split over render services (one core each) against one render service"

RENDER_SERVICES = 2
SOURCE_NAME = "split-source.mp4"
RENDER_TIMEOUT_SECONDS = 1800.0


@dataclass(frozen=True)
class Source:
    seconds: float
    width: int
    height: int
    fps: float


FULL_SOURCE = Source(120.0, 1280, 720, 25.0)
QUICK_SOURCE = Source(4.0, 320, 240, 25.0)
# The quick form's frames (the same plan) in the smallest frame.
SMOKE_SOURCE = Source(4.0, 160, 120, 25.0)
SHORT_JOB_SECONDS = 10.0
# The split's forms: the join encoding the audio after the parts, or an audio render beside them.
AUDIO_IN_JOIN = "audio in join"
AUDIO_APART = "audio apart"
SPLIT_FORMS = {AUDIO_IN_JOIN: False, AUDIO_APART: True}


# No preset in the spec: x264's own default, medium.
DEFAULT_PRESET = ""


def shown_preset(preset: str) -> str:
    return preset or "default (medium)"


def make_source(media: Path, source: Source) -> Path:
    """The source transcode (h264 + AAC in MP4), made once under ``media`` and kept there."""
    path = media / f"{source.width}x{source.height}-{source.seconds:g}s-{SOURCE_NAME}"
    if path.exists():
        return path
    media.mkdir(parents=True, exist_ok=True)
    size = f"{source.width}x{source.height}"
    seconds = f"{source.seconds:g}"
    partial = path.with_suffix(".partial.mp4")
    subprocess.run(
        [
            ffmpeg_binary(), "-hide_banner", "-nostdin", "-y", "-v", "error",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={source.fps:g}:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-g", "250",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-shortest",
            "-f", "mp4", str(partial),
        ],
        check=True,
        timeout=900,
    )  # fmt: skip
    partial.rename(path)
    return path


def transcode_spec(input_path: str, preset: str) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = input_path
    spec.output.container = "mp4"
    spec.output.video_codec = "h264"
    spec.output.audio_codec = "aac"
    spec.output.preset = preset
    return normalize_spec(spec)


def _pin(pid: int, core: int) -> None:
    """Pins every thread of the process ``pid`` to ``core``; the FFmpeg it starts inherits it."""
    subprocess.run(
        ["taskset", "-a", "-p", "-c", str(core), str(pid)],
        check=True,
        capture_output=True,
        timeout=10,
    )


@dataclass
class Rendered:
    output_path: str
    seconds: float


async def _render(
    stub: render_pb2_grpc.RenderServiceAsyncStub, render_id: str, spec: spec_pb2.RenderSpec
) -> Rendered:
    began = time.monotonic()
    last: render_pb2.RenderEvent | None = None
    request = render_pb2.RenderRequest(render_id=render_id, spec=spec)
    async for event in stub.Render(request, timeout=RENDER_TIMEOUT_SECONDS):
        last = event
    seconds = time.monotonic() - began
    if last is None or last.WhichOneof("event") != "completed":
        raise RuntimeError(f"render {render_id} did not complete: {last}")
    return Rendered(last.completed.output_path, seconds)


@dataclass
class Split:
    wall: Rendered
    join: Rendered
    parts: list[Rendered]
    audio: Rendered | None
    # CPU seconds each render service (with its FFmpeg) spent on the split.
    cpu: list[float]


def _cpu(pids: list[int]) -> list[float]:
    return [cpu_seconds_with_children(pid) for pid in pids]


async def _split(
    stubs: list[render_pb2_grpc.RenderServiceAsyncStub],
    spec: spec_pb2.RenderSpec,
    plan: split_plan.Plan,
    name: str,
    audio_apart: bool,
    pids: list[int],
) -> Split:
    """The parts (part i on service i), with ``audio_apart`` the audio render beside them, then
    the join on service 0."""
    cpu_before = _cpu(pids)
    began = time.monotonic()
    part_specs = [split_plan.part_spec(spec, plan, index) for index in range(len(plan.parts))]
    parts = [
        _render(stubs[index % len(stubs)], f"{name}-part{index}", part_specs[index])
        for index in range(len(plan.parts))
    ]
    audio: Rendered | None = None
    if audio_apart:
        # On a service no part uses if there is one, else beside the part with the fewest
        # frames (the last, when they are uneven).
        smallest = min(plan.parts, key=lambda part: (part.frame_count, -part.index)).index
        spare = len(plan.parts) if len(stubs) > len(plan.parts) else smallest
        audio_stub = stubs[spare % len(stubs)]
        audio_render = _render(audio_stub, f"{name}-audio", split_plan.audio_spec(spec, plan))
        *rendered, audio = await asyncio.gather(*parts, audio_render)
    else:
        rendered = list(await asyncio.gather(*parts))
    paths = [part.output_path for part in rendered]
    audio_path = "" if audio is None else audio.output_path
    join = split_plan.join_spec(spec, plan, paths, audio_path)
    joined = await _render(stubs[0], f"{name}-join", join)
    wall = Rendered(joined.output_path, time.monotonic() - began)
    cpu = [after - before for before, after in zip(cpu_before, _cpu(pids), strict=True)]
    return Split(wall, joined, rendered, audio, cpu)


def psnr(output: Path, source: Path) -> float:
    """The average PSNR (dB, all planes) of ``output``'s video against ``source``'s."""
    completed = subprocess.run(
        [
            ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", str(output), "-i", str(source),
            "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )  # fmt: skip
    found = re.search(r"PSNR .* average:(\S+)", completed.stderr)
    if found is None:
        raise RuntimeError(f"no PSNR in ffmpeg's output: {completed.stderr[-500:]}")
    return 100.0 if found.group(1) == "inf" else float(found.group(1))


def _short_job_decision(result: BenchResult) -> None:
    """What the policy's decision costs a short job (its facts are already known: the input
    check at create asked a render service for them)."""
    spec = transcode_spec("short.mp4", "veryfast")
    facts = split_plan.SourceFacts(
        SHORT_JOB_SECONDS, 25.0, has_audio=True, video_seconds=SHORT_JOB_SECONDS
    )
    policy = split_plan.SplitPolicy()
    free = [4, 4]
    verdict = split_plan.plan_split(spec, facts, policy, free)
    calls = 2000
    seconds = timeit.timeit(lambda: split_plan.plan_split(spec, facts, policy, free), number=calls)
    result.details["short_job"] = {
        "seconds": SHORT_JOB_SECONDS,
        "verdict": verdict.shown if isinstance(verdict, split_plan.Whole) else "split",
    }
    result.add("short job: plan_split", seconds / calls * 1e6, "us")
    split = 0 if isinstance(verdict, split_plan.Whole) else 1
    result.add("short job: split (1) or whole (0)", split, "", at_most=0)


async def _measure(
    stack: Stack, source: Path, preset: str, rounds: int, parts: int, result: BenchResult
) -> None:
    channels = [create_channel(process.address) for process in stack.renders]
    try:
        stubs = [render_pb2_grpc.RenderServiceStub(channel) for channel in channels]
        spec = transcode_spec(source.name, preset)
        answer = await stubs[0].CheckInputs(render_pb2.CheckInputsRequest(spec=spec), timeout=60)
        facts = split_plan.source_facts(spec, answer)
        # By default as many parts as render services: what the policy cuts a 2-minute output
        # into over an idle pool of two, and what a job asking for N parts gets.
        asked = spec_pb2.RenderSpec()
        asked.CopyFrom(spec)
        asked.output.split.parts = parts
        plan = split_plan.plan_split(asked, facts, split_plan.SplitPolicy(), [1] * len(stubs))
        if not isinstance(plan, split_plan.Plan):
            raise RuntimeError(f"the job was not split: {plan.shown}")
        result.details["plan"] = {
            "parts": [part.frame_count for part in plan.parts],
            "total_frames": plan.total_frames,
            "fps": plan.fps,
        }
        pids = [process.pid for process in stack.renders]
        wholes: list[Rendered] = []
        whole_cpu: list[float] = []
        splits: dict[str, list[Split]] = {form: [] for form in SPLIT_FORMS}
        for round_index in range(rounds):
            cpu_before = _cpu(pids[:1])[0]
            tag = f"{preset or 'default'}-{round_index}"
            wholes.append(await _render(stubs[0], f"whole-{tag}", spec))
            whole_cpu.append(_cpu(pids[:1])[0] - cpu_before)
            for form, apart in SPLIT_FORMS.items():
                name = f"split-{form.replace(' ', '-')}-{tag}"
                splits[form].append(await _split(stubs, asked, plan, name, apart, pids))
    finally:
        for channel in channels:
            await channel.close(None)
    whole_seconds = min(whole.seconds for whole in wholes)
    result.add("whole, one service", whole_seconds, "s")
    result.add("whole: CPU", min(whole_cpu), "s")
    result.details["rounds"] = {
        "whole_s": [round(whole.seconds, 2) for whole in wholes],
        "whole_cpu_s": [round(seconds, 2) for seconds in whole_cpu],
    }
    for form, runs in splits.items():
        best = min(runs, key=lambda split: split.wall.seconds)
        result.details["rounds"][form] = [
            {
                "split_s": round(split.wall.seconds, 2),
                "parts_s": [round(part.seconds, 2) for part in split.parts],
                "audio_s": None if split.audio is None else round(split.audio.seconds, 2),
                "join_s": round(split.join.seconds, 2),
                "cpu_per_service_s": [round(seconds, 2) for seconds in split.cpu],
            }
            for split in runs
        ]
        ratio = best.wall.seconds / whole_seconds
        result.add(f"split ({form}): parts + join", best.wall.seconds, "s")
        result.add(f"split ({form}) / whole", ratio, "x", at_most=0.58)
        result.add(f"split ({form}): slowest part", max(p.seconds for p in best.parts), "s")
        if best.audio is not None:
            result.add(f"split ({form}): audio beside the parts", best.audio.seconds, "s")
        result.add(f"split ({form}): join", best.join.seconds, "s")
        # What the wall ratio would be with each core to itself: the busiest service's CPU
        # over the whole's (the machine's other work takes cores' time from both sides alike
        # only when it has nowhere else to run).
        busiest = min(max(split.cpu) for split in runs)
        result.add(f"split ({form}): busiest service's CPU", busiest, "s")
        result.add(f"split ({form}) / whole, by CPU", busiest / min(whole_cpu), "x")
    source_path = Path(source)
    whole_psnr = await asyncio.to_thread(psnr, Path(wholes[-1].output_path), source_path)
    split_psnr = await asyncio.to_thread(
        psnr, Path(splits[AUDIO_APART][-1].wall.output_path), source_path
    )
    result.add("PSNR whole vs source", whole_psnr, "dB")
    result.add("PSNR split vs source", split_psnr, "dB")
    result.add("PSNR |split - whole|", abs(split_psnr - whole_psnr), "dB", at_most=0.3)


async def _measure_presets(
    stack: Stack, source: Path, presets: list[str], rounds: int, parts: int, result: BenchResult
) -> None:
    """The first preset's figures as they are; each other's named after its preset, its
    details under ``details["presets"]``."""
    await _measure(stack, source, presets[0], rounds, parts, result)
    for preset in presets[1:]:
        other = BenchResult(NAME, TITLE)
        await _measure(stack, source, preset, rounds, parts, other)
        for metric in other.metrics:
            result.metrics.append(replace(metric, name=f"{preset}: {metric.name}"))
        result.details.setdefault("presets", {})[preset] = other.details


def steps(stamps: Path) -> dict[str, dict[str, float]]:
    """Per render: seconds in FFmpeg (spawned to its exit seen) and in verification, from the
    render services' stamps (written when they exit)."""
    seen: dict[str, dict[str, float]] = {}
    if stamps.exists():
        for line in stamps.read_text().splitlines():
            when, _pid, step, render_id, *_ = line.split(" ")
            seen.setdefault(render_id, {})[step.removeprefix("render.")] = float(when)
    shown: dict[str, dict[str, float]] = {}
    for render_id, at in sorted(seen.items()):
        shown[render_id] = {
            name: round(at[end] - at[begin], 2)
            for name, begin, end in (
                ("ffmpeg", "spawned", "exit_seen"),
                ("verify", "verify_start", "verify_end"),
            )
            if begin in at and end in at
        }
    return shown


def run_with(
    workdir: Path,
    quick: bool,
    services: int = RENDER_SERVICES,
    parts: int = 0,
    preset: str | None = None,
    rounds: int = 0,
    source_shape: Source | None = None,
) -> BenchResult:
    """``parts`` 0: as many as ``services``; ``preset``, ``source_shape`` None and ``rounds`` 0:
    the form's own."""
    parts = parts or services
    result = BenchResult(NAME, TITLE)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < services:
        result.skipped = f"{services} render services need {services} cores ({len(cores)} here)"
        return result
    source_shape = source_shape or (QUICK_SOURCE if quick else FULL_SOURCE)
    # The full form: the spec as a user sends it (no preset: x264's medium), then veryfast,
    # whose cheaper encode leaves the split's fixed costs (the parts' decode check, the join)
    # a larger share.
    if preset is not None:
        presets = [preset]
    else:
        presets = ["ultrafast"] if quick else [DEFAULT_PRESET, "veryfast"]
    rounds = rounds or (1 if quick else 2)
    media = workdir / "media"
    source = make_source(media, source_shape)
    result.details["setup"] = {
        "render_services": services,
        "parts": parts,
        "source": f"{source_shape.width}x{source_shape.height} {source_shape.seconds:g} s "
        f"at {source_shape.fps:g} fps, h264 + aac",
        "output": [f"mp4 h264 {shown_preset(preset)} + aac" for preset in presets],
        "rounds": rounds,
        "cores": cores[:services],
    }
    stamps = workdir / "stamps.txt"
    stamps.unlink(missing_ok=True)
    config = StackConfig(
        workdir / "stack",
        output_dir=workdir / "output",
        media_root=media,
        render=Role(
            count=services, args=("--max-concurrent", "2"), env={"VIDEOJOB_STAMPS": str(stamps)}
        ),
        export=Role(count=0),
        gateway=Role(count=0),
    )
    stack = Stack(config)
    try:
        stack.start_renders()
        for process, core in zip(stack.renders, cores, strict=False):
            _pin(process.pid, core)
        asyncio.run(_measure_presets(stack, source, presets, rounds, parts, result))
    finally:
        stack.stop()
    result.details["steps_s"] = steps(stamps)
    _short_job_decision(result)
    return result


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_with(workdir, quick)


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: the quick form on a 160x120 source."""
    return run_with(workdir, True, source_shape=SMOKE_SOURCE)


def main(argv: list[str] | None = None) -> int:
    """Runs this benchmark alone with ``--services N`` render services (N parts, N cores);
    prints its result and writes nothing."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_split")
    parser.add_argument("--services", type=int, default=RENDER_SERVICES)
    parser.add_argument("--parts", type=int, default=0, help="default: one per service")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--preset", help="one x264 preset ('' for none: medium); default: the form's own"
    )
    parser.add_argument("--rounds", type=int, default=0, help="default: the form's own")
    parser.add_argument("--workdir", type=Path, required=True, help="kept: the source is reused")
    args = parser.parse_args(argv)
    result = run_with(args.workdir, args.quick, args.services, args.parts, args.preset, args.rounds)
    metrics = [(m.name, m.value, m.unit, m.aim, m.met) for m in result.metrics]
    print(
        json.dumps(
            {"metrics": metrics, "details": result.details, "skipped": result.skipped}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
