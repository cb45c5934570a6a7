"""JSON that clients send (request bodies, configuration files), parsed with a bound on how
deeply arrays and objects nest.

Python's parser recurses once per level and raises ``RecursionError`` at about 1,000 levels
(``{"prompt": [[[[...]]]]}``); a structure just below that parses, and then pydantic and
``json.dumps`` recurse through it again. No request needs more than a few levels; past
``MAX_DEPTH`` the input is refused with ``TooDeep``, a ``ValueError``.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class TooDeep(ValueError):
    """The JSON nests arrays and objects deeper than ``MAX_DEPTH``."""

    def __init__(self) -> None:
        super().__init__(f"nested too deeply: at most {MAX_DEPTH} levels of arrays and objects")


def loads(raw: str | bytes) -> Any:
    """``json.loads``, but ``TooDeep`` past ``MAX_DEPTH`` levels. Other errors as ``json.loads``
    raises them (``ValueError``; ``UnicodeDecodeError`` for bytes that are no Unicode)."""
    text = raw.decode(json.detect_encoding(raw), "surrogatepass") if isinstance(raw, bytes) else raw
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep() from None
    if too_deep(text):
        raise TooDeep()
    return value


def too_deep(text: str) -> bool:
    """Whether valid JSON ``text`` nests deeper than ``MAX_DEPTH`` (without recursing)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    # Only the brackets outside strings count; one type suffices as the JSON is valid.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).replace("{", "[").replace("}", "]")
    # Each pass removes exactly the innermost level: the pairs nested one level deeper than
    # any other were adjacent, and a pair that becomes adjacent is not matched in the same pass.
    for _ in range(MAX_DEPTH):
        brackets = brackets.replace("[]", "")
        if not brackets:
            return False
    return True
