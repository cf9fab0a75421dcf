"""The render service's grpcurl recipes in docs/grpc.md, run with the real grpcurl against a real
render service process."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import cast

from tests.support.processes import ServiceProcess
from tests.support.readme_recipes import GRPCURL, grpcurl_recipes, json_stream
from videojob.endpoints import DEFAULT_RENDER_ADDRESS

DEFAULT_ADDRESS = DEFAULT_RENDER_ADDRESS


def test_readme_has_every_render_recipe() -> None:
    joined = [" ".join(command) for command in grpcurl_recipes("## Render service")]
    for needle in (" list", "describe videojob.render.v1.RenderService", "Health/Check"):
        assert any(needle in command for command in joined), needle
    methods = ("Render", "GetRender", "WatchRender", "CancelRender", "GetCapacity", "CheckInputs")
    for method in methods:
        assert any(command.endswith(f"RenderService/{method}") for command in joined), method


def test_readme_recipes_run_against_a_real_service(
    process_factory: Callable[..., ServiceProcess],
) -> None:
    service = process_factory()
    outputs = []
    for command in grpcurl_recipes("## Render service"):
        argv = [
            str(GRPCURL),
            *(service.address if a == DEFAULT_ADDRESS else a for a in command[1:]),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, (command, result.stderr)
        outputs.append(result.stdout)
    by_method = dict(
        zip((c[-1] for c in grpcurl_recipes("## Render service")), outputs, strict=True)
    )

    assert "videojob.render.v1.RenderService" in by_method["list"]
    assert "rpc WatchRender" in by_method["videojob.render.v1.RenderService"]
    assert '"SERVING"' in by_method["grpc.health.v1.Health/Check"]
    rendered = json_stream(by_method["videojob.render.v1.RenderService/Render"])
    assert [event["seq"] for event in rendered] == [str(i) for i in range(1, len(rendered) + 1)]
    completed = cast(dict[str, object], rendered[-1]["completed"])
    assert Path(str(completed["output_path"])).is_file()
    info = json.loads(by_method["videojob.render.v1.RenderService/GetRender"])
    assert info["state"] == "RENDER_STATE_COMPLETED"
    watched = json_stream(by_method["videojob.render.v1.RenderService/WatchRender"])
    assert watched == rendered[3:]
    cancelled = json.loads(by_method["videojob.render.v1.RenderService/CancelRender"])
    assert cancelled == info
    capacity = json.loads(by_method["videojob.render.v1.RenderService/GetCapacity"])
    assert capacity["max_queue"] == 256 and capacity["max_concurrent"] >= 1
    assert capacity["instance_id"] and "running" not in capacity  # 0 is not printed
    facts = json.loads(by_method["videojob.render.v1.RenderService/CheckInputs"])
    assert facts == {
        "duration_seconds": 2,
        "fps": 10,
        "has_audio": True,
        "video_duration_seconds": 2,
    }
