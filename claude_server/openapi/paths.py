"""The paths of the route table as OpenAPI writes them: aiohttp's ``{name:regex}`` becomes
``{name}``, and a parameter whose regex is a choice of fixed words (``{kind:agents|skills}``,
``{action:enable|disable|reset}``) becomes one path per word, since each is its own endpoint
for a client (and two such resources would share one templated path)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import web

_WORDS = re.compile(r"[A-Za-z0-9_\\-]+(\|[A-Za-z0-9_\\-]+)*")
_GROUP = "(?P<"


@dataclass(frozen=True)
class Path:
    """One OpenAPI path of a resource: the template, the words fixed in it, and the pattern
    of each parameter left in it."""

    template: str
    fixed: tuple[tuple[str, str], ...]
    patterns: tuple[tuple[str, str], ...]


def groups(pattern: str) -> dict[str, str]:
    """Each named group of a resource's compiled pattern and its regex (nested parentheses
    included)."""
    found: dict[str, str] = {}
    start = pattern.find(_GROUP)
    while start != -1:
        name_end = pattern.index(">", start)
        name = pattern[start + len(_GROUP) : name_end]
        depth, i = 1, name_end + 1
        while depth:
            if pattern[i] == "\\":
                i += 2
                continue
            depth += {"(": 1, ")": -1}.get(pattern[i], 0)
            i += 1
        found[name] = pattern[name_end + 1 : i - 1]
        start = pattern.find(_GROUP, i)
    return found


def _choices(regex: str) -> list[str] | None:
    if not _WORDS.fullmatch(regex):
        return None
    return [re.sub(r"\\(.)", r"\1", word) for word in regex.split("|")]


def paths_of(resource: web.AbstractResource) -> Iterator[Path]:
    """The OpenAPI paths one resource answers on."""
    info = resource.get_info()
    if "path" in info:
        yield Path(str(info["path"]), (), ())
        return
    if "prefix" in info:  # a static directory
        yield Path(str(info["prefix"]).rstrip("/") + "/{filename}", (), (("filename", ".+"),))
        return
    template = str(info["formatter"])
    params = groups(info["pattern"].pattern)
    variants: list[tuple[str, tuple[tuple[str, str], ...]]] = [(template, ())]
    for name, regex in params.items():
        words = _choices(regex)
        if words is None:
            continue
        variants = [
            (t.replace("{" + name + "}", word), fixed + ((name, word),)) for t, fixed in variants for word in words
        ]
    for path, fixed in variants:
        left = tuple((n, r) for n, r in params.items() if "{" + n + "}" in path)
        yield Path(path, fixed, left)
