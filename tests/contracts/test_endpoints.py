"""The default addresses, the gRPC service names and the export service's trailing metadata
key are written once (videojob.endpoints): every process listens there unless told otherwise,
every client looks there, the README and docs/grpc.md say so, and no other module spells them
out."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

from export_service.__main__ import FLAGS as EXPORT_FLAGS
from export_service.config import ExportConfig
from gateway.__main__ import FLAGS as GATEWAY_FLAGS
from gateway.settings import Settings
from render_service.__main__ import FLAGS as RENDER_FLAGS
from tests.support.processes import REPO_ROOT
from videojob import endpoints
from videojob_cli.main import _FLAGS as CLI_FLAGS


def _run_stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "run_stack_for_endpoints", REPO_ROOT / "scripts" / "run_stack.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_process_listens_on_its_default_address() -> None:
    assert RENDER_FLAGS.flag("--listen").default == endpoints.DEFAULT_RENDER_ADDRESS
    assert EXPORT_FLAGS.flag("--listen").default == endpoints.DEFAULT_EXPORT_ADDRESS
    assert GATEWAY_FLAGS.flag("--listen").default == endpoints.DEFAULT_GATEWAY_ADDRESS
    launcher = _run_stack().FLAGS
    assert launcher.flag("--render-listen").default == endpoints.DEFAULT_RENDER_ADDRESS
    assert launcher.flag("--export-listen").default == endpoints.DEFAULT_EXPORT_ADDRESS
    assert launcher.flag("--gateway-listen").default == endpoints.DEFAULT_GATEWAY_ADDRESS


def test_every_client_looks_for_its_service_there() -> None:
    assert EXPORT_FLAGS.flag("--render-addr").default == endpoints.DEFAULT_RENDER_ADDRESS
    assert ExportConfig().render_addr == endpoints.DEFAULT_RENDER_ADDRESS
    assert GATEWAY_FLAGS.flag("--export-addr").default == endpoints.DEFAULT_EXPORT_ADDRESS
    assert Settings().export_addr == endpoints.DEFAULT_EXPORT_ADDRESS
    assert CLI_FLAGS["--export-addr"].default == endpoints.DEFAULT_EXPORT_ADDRESS
    assert CLI_FLAGS["--gateway-url"].default == endpoints.DEFAULT_GATEWAY_URL


def test_the_docs_state_the_defaults() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    recipes = (REPO_ROOT / "docs" / "grpc.md").read_text(encoding="utf-8")
    assert f"`python -m render_service`, default `{endpoints.DEFAULT_RENDER_ADDRESS}`" in recipes
    assert f"`python -m export_service`, default `{endpoints.DEFAULT_EXPORT_ADDRESS}`" in recipes
    assert f"`make run` prints the page's URL\n(`{endpoints.DEFAULT_GATEWAY_URL}/`)" in readme


WRITTEN_ONCE = {
    endpoints.DEFAULT_RENDER_ADDRESS,
    endpoints.DEFAULT_EXPORT_ADDRESS,
    endpoints.DEFAULT_GATEWAY_ADDRESS,
    endpoints.DEFAULT_GATEWAY_URL,
    endpoints.RENDER_SERVICE,
    endpoints.EXPORT_SERVICE,
    endpoints.IDEMPOTENT_REPLAYED_METADATA,
}
# Everything but the tests (which quote the documented recipes) and the generated code.
CODE = (
    "videojob", "videojob_cli", "videojob_launcher", "render_service", "export_service",
    "gateway", "bench", "scripts",
)  # fmt: skip


def _code_modules() -> list[Path]:
    return sorted(
        path
        for top in CODE
        for path in (REPO_ROOT / top).rglob("*.py")
        if "_pb2" not in path.name and path != REPO_ROOT / "videojob" / "endpoints.py"
    )


def test_no_other_module_spells_out_an_address_a_service_name_or_a_metadata_key() -> None:
    spelled = []
    for path in _code_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in WRITTEN_ONCE:
                spelled.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value!r}")
    assert spelled == []
