"""How the management commands print: aligned tables and ``key  value`` lines for people,
JSON for scripts, and times, durations, costs and token counts in a readable form."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

# A cell longer than this is cut (with "…"): a title or a prompt may be pages long.
CELL_MAX_CHARS = 60
# Columns are this many spaces apart.
GAP = "  "


def emit_json(value: Any, out: TextIO | None = None) -> None:
    """``value`` as indented JSON on stdout (a script reads the whole answer as one document)."""
    print(json.dumps(value, indent=2, ensure_ascii=False), file=out or sys.stdout)


def cut(text: str, limit: int = CELL_MAX_CHARS) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    """Columns aligned under their headers; the columns in ``right`` (numbers) right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return GAP.join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def fields(pairs: Sequence[tuple[str, str]]) -> str:
    """``name  value`` lines, the values aligned."""
    width = max((len(name) for name, _ in pairs), default=0)
    return "\n".join(f"{name.ljust(width)}{GAP}{value}".rstrip() for name, value in pairs)


def when(stamp: str | None) -> str:
    """``2026-12-02 19:05:03`` (UTC) from a stored stamp; ``-`` for none."""
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(ms: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; ``-`` for none."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def span(start: str | None, end: str | None) -> float | None:
    """Milliseconds from one stored stamp to another, or None."""
    if not start or not end:
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (b - a).total_seconds() * 1000


def cost(usd: float | None) -> str:
    """``$0.0021``, ``$1.25``; ``-`` for none (a turn that reported no cost)."""
    if usd is None:
        return "-"
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def count(n: int | float | None) -> str:
    """``12,345``; ``-`` for none."""
    return "-" if n is None else f"{int(n):,}"


def text(value: Any) -> str:
    """Any JSON value as one short line."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {text(v)}" for k, v in value.items())
    return json.dumps(value, ensure_ascii=False)


def error_text(error: Mapping[str, Any] | None) -> str:
    """A turn's recorded error as one line: its code and message."""
    if not error:
        return "-"
    code, message = error.get("code"), error.get("message")
    if code and message:
        return f"{code}: {message}"
    return str(message or code or json.dumps(error))
