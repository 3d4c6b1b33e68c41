"""Reading the expression's source: positions as "line L, column C", string literals blanked
so that paths inside them are ignored, and the steps of an ``event.a.b`` path."""

from __future__ import annotations

import re

_STRING = re.compile(
    r"""[rRbB]{0,2}("""
    r'"""(?:\\.|[^\\])*?"""'
    r"|'''(?:\\.|[^\\])*?'''"
    r'|"(?:\\.|[^"\\\n])*"'
    r"|'(?:\\.|[^'\\\n])*')"
)
#: One step of a path: ``.name`` (spaces allowed around the dot).
STEP = re.compile(r"\s*\.\s*([A-Za-z_]\w*)")


def position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def blank_strings(text: str) -> str:
    """The text with string literals' contents blanked, so paths inside them are ignored."""
    return _STRING.sub(lambda m: " " * len(m.group(0)), text)
