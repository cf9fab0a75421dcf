"""The export service's grpcurl recipes in docs/grpc.md, run with the real grpcurl against real
render and export service processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.export.conftest import RenderProcesses, stop_processes
from tests.support.processes import ServiceProcess, start_service
from tests.support.readme_recipes import GRPCURL, RECIPES, grpcurl_recipes, json_stream
from videojob.endpoints import DEFAULT_EXPORT_ADDRESS

DEFAULT_ADDRESS = DEFAULT_EXPORT_ADDRESS


@pytest.fixture
def export_process(render_processes: RenderProcesses, tmp_path: Path) -> Iterator[ServiceProcess]:
    render = render_processes.start()
    database = f"sqlite:///{tmp_path / 'export.db'}"
    args = ["--listen", "127.0.0.1:0", "--render-addr", render.address, "--database", database]
    process = start_service("export_service", args)
    yield process
    stop_processes([process])


def test_readme_has_every_export_recipe() -> None:
    joined = [" ".join(command) for command in grpcurl_recipes("## Export service")]
    assert any(command.endswith(" list") for command in joined)
    assert any("Health/Check" in command for command in joined)
    for method in (
        "CreateExport",
        "GetExport",
        "ListExports",
        "WatchExport",
        "WatchExports",
        "ListJobHistory",
        "CancelExport",
    ):
        assert any(command.endswith(f"ExportService/{method}") for command in joined), method


def first_streamed_message(argv: list[str]) -> str:
    """What a stream that never ends by itself (WatchExports) prints up to its first message;
    then the stream is stopped, as a reader of the recipes stops it with Ctrl-C."""
    decoder = json.JSONDecoder()
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            text = ""
            while True:
                line = process.stdout.readline()
                assert line, (argv, process.stderr.read())
                text += line
                try:
                    decoder.raw_decode(text.strip())
                except json.JSONDecodeError:
                    continue
                return text
        finally:
            process.terminate()


def test_readme_recipes_run_against_real_services(export_process: ServiceProcess) -> None:
    ids: dict[str, str] = {}
    results: list[tuple[list[str], str]] = []
    for command in grpcurl_recipes("## Export service"):
        argv = [str(GRPCURL)]
        for arg in command[1:]:
            if arg == DEFAULT_ADDRESS:
                arg = export_process.address
            for name, job_id in ids.items():
                arg = arg.replace(name, job_id)
            argv.append(arg)
        if command[-1].endswith("/WatchExports"):
            results.append((command, first_streamed_message(argv)))
            continue
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, (command, result.stderr)
        results.append((command, result.stdout))
        if command[-1].endswith("/CreateExport"):
            ids[f"ID_{len(ids) + 1}"] = json.loads(result.stdout)["id"]

    outputs = [stdout for _, stdout in results]
    methods = [command[-1].rsplit("/", 1)[-1] for command, _ in results]
    listed_services = outputs[methods.index("list")].split()
    assert "videojob.export.v1.ExportService" in listed_services
    assert "google.longrunning.Operations" in listed_services
    assert '"SERVING"' in outputs[methods.index("Check")]
    first = methods.index("WatchExport")
    watched = json_stream(outputs[first])
    assert [int(str(u["version"])) for u in watched] == sorted(
        {int(str(u["version"])) for u in watched}
    )
    final = watched[-1]
    assert final["status"] == "COMPLETED" and final["progress"] == 100
    assert Path(str(final["output_path"])).is_file()
    resumed = json_stream(outputs[first + 1])
    assert resumed[-1] == final and all(int(str(u["version"])) > 2 for u in resumed)
    assert json.loads(outputs[methods.index("GetExport")]) == final
    listed = [
        json.loads(out) for out, m in zip(outputs, methods, strict=True) if m == "ListExports"
    ]
    assert [job["id"] for job in listed[0]["jobs"]] == [ids["ID_1"]]
    assert [job["id"] for job in listed[1]["jobs"]] == [ids["ID_1"]]
    assert json_stream(outputs[methods.index("WatchExports")])[0] == final
    histories = [
        json.loads(out) for out, m in zip(outputs, methods, strict=True) if m == "ListJobHistory"
    ]
    versions = [int(str(entry["version"])) for entry in histories[0]["entries"]]
    assert versions == list(range(1, int(str(final["version"])) + 1))
    changes = [entry["change"] for entry in histories[0]["entries"]]
    assert (changes[0], changes[-1]) == ("create", "complete")
    assert [int(str(entry["version"])) for entry in histories[1]["entries"]] == versions[1:3]
    more = len(versions) > 3
    assert int(str(histories[1].get("next_after_version", 0))) == (3 if more else 0)
    cancelled = json.loads(outputs[methods.index("CancelExport")])
    assert cancelled["id"] == ids["ID_2"] and cancelled["status"] == "CANCELLED"


def test_readme_has_every_operations_recipe() -> None:
    joined = [" ".join(command) for command in grpcurl_recipes("## Long-running operations")]
    assert any(command.endswith("ExportService/StartExport") for command in joined)
    for method in (
        "GetOperation",
        "ListOperations",
        "WaitOperation",
        "CancelOperation",
        "DeleteOperation",
    ):
        assert any(
            command.endswith(f"google.longrunning.Operations/{method}") for command in joined
        )


def test_operations_recipes_run_against_real_services(export_process: ServiceProcess) -> None:
    ids: dict[str, str] = {}
    outputs: dict[str, list[dict[str, Any]]] = {}
    for command in grpcurl_recipes("## Long-running operations"):
        argv = [str(GRPCURL)]
        for arg in command[1:]:
            if arg == DEFAULT_ADDRESS:
                arg = export_process.address
            for name, job_id in ids.items():
                arg = arg.replace(name, job_id)
            argv.append(arg)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
        assert result.returncode == 0, (command, result.stderr)
        method = command[-1].rsplit("/", 1)[-1]
        answer = json.loads(result.stdout)
        outputs.setdefault(method, []).append(answer)
        if method == "StartExport":
            ids[f"ID_{len(ids) + 1}"] = answer["name"].removeprefix("operations/")
        if method == "WaitOperation":
            assert Path(answer["response"]["output_path"]).is_file(), answer

    [waited] = outputs["WaitOperation"]
    assert waited["name"] == f"operations/{ids['ID_1']}" and waited["done"] is True
    finished = waited["response"]
    assert finished["@type"] == "type.googleapis.com/videojob.export.v1.VideoJob"
    assert finished["status"] == "COMPLETED" and finished["progress"] == 100
    assert outputs["GetOperation"] == [waited]
    [listed] = outputs["ListOperations"]
    assert [op["name"] for op in listed["operations"]] == [waited["name"]]
    assert outputs["DeleteOperation"] == [{}]
    assert not Path(finished["output_path"]).exists()
    assert outputs["CancelOperation"] == [{}]


def python_example() -> str:
    text = RECIPES.read_text()
    section = text[text.index("## Long-running operations") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_the_python_operations_example_runs(export_process: ServiceProcess) -> None:
    script = python_example().replace(
        f'ADDRESS = "{DEFAULT_ADDRESS}"', f'ADDRESS = "{export_process.address}"'
    )
    assert export_process.address in script
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    name_and_stage, output_path = result.stdout.splitlines()
    assert name_and_stage.startswith("operations/")
    assert Path(output_path).is_file()
