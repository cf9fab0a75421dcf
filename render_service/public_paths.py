"""What a client is shown of the render service's own directories: nothing. A failure's message
and log lines leave the service with every path under the media root or the output directory
written relative to it (``file:/srv/videojob/media/clips/a.mp4`` becomes ``clips/a.mp4``), and
the directory itself as ``.``; the service's own log keeps them whole for operators.

FFmpeg prints the paths it was given, which are the resolved ones, sometimes with the ``file:``
protocol prefix, and in a filter graph escaped for one or both levels of its parsing; each
directory is matched in every one of these spellings."""

from __future__ import annotations

import re
from pathlib import Path

from render_service.ffmpeg_command import escape_filter_value, escape_option_value

# What may follow a directory's own path where it ends (a quote, punctuation, a space): anything
# else (``media-old``, ``media.bak``) makes it another path.
_END = r"(?=$|[\s'\"`,;:)\]}>]|\.(?![\w.-]))"


def _spellings(directory: Path) -> set[str]:
    names = set()
    for path in (directory.absolute(), directory.resolve()):
        text = str(path).rstrip("/")
        if text:
            names |= {text, escape_option_value(text), escape_filter_value(text)}
    return names


class RelativePaths:
    """``rewrite(text)``: ``text`` with every path under ``directories`` made relative."""

    def __init__(self, *directories: Path) -> None:
        spellings = set().union(*(_spellings(directory) for directory in directories))
        # The longest first: a directory inside another one is matched as itself.
        longest_first = sorted(spellings, key=len, reverse=True)
        alternatives = "|".join(re.escape(name) for name in longest_first)
        self._pattern = (
            re.compile(f"(?:file:)?(?:{alternatives})(?:(?P<under>/+)|{_END})")
            if alternatives
            else None
        )

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda match: "" if match["under"] else ".", text)
