"""The grpcurl recipes of docs/grpc.md, as commands a test can run with the real grpcurl binary."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from tests.support.processes import REPO_ROOT

RECIPES = REPO_ROOT / "docs" / "grpc.md"
GRPCURL = Path(sys.executable).parent / "grpcurl"


def grpcurl_recipes(section: str) -> list[list[str]]:
    """The ``$ grpcurl ...`` lines under the heading ``section``, up to the next heading."""
    lines = RECIPES.read_text().splitlines()
    start = lines.index(section)
    commands = []
    for line in lines[start + 1 :]:
        if line.startswith("#") or line.startswith("<!--"):
            break
        if line.startswith("$ grpcurl "):
            commands.append(shlex.split(line[2:]))
    return commands


def json_stream(text: str) -> list[dict[str, object]]:
    """The JSON objects grpcurl prints one after another for a server stream."""
    decoder = json.JSONDecoder()
    items, index, text = [], 0, text.strip()
    while index < len(text):
        item, index = decoder.raw_decode(text, index)
        items.append(item)
        while index < len(text) and text[index].isspace():
            index += 1
    return items
