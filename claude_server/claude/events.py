"""What a CLI stdout line means. Fields are read defensively: they change across versions
(between 2.1.197 and 2.1.330 ``init`` gained 11 fields and ``result`` 8, and in ``result``
the ``type`` key moved to the end), and unknown types are passed through untouched."""

from __future__ import annotations

import json
import re
from typing import Any

# The CLI prints most lines with "type" first. The kinds that come by the thousand (token
# deltas, messages, tool results) need nothing read from them, so they are recognised by
# their head instead of being parsed: a full json.loads costs ~9 us for a 1 KiB line, this
# ~1 us. Everything else (init, result, whose "type" comes last, unknown kinds) is parsed.
_HEAD = re.compile(rb'\{\s*"type"\s*:\s*"(assistant|user|stream_event)"\s*,')
_KINDS = {b"assistant": "assistant", b"user": "user", b"stream_event": "stream_event"}
# The heads as the CLI prints them (compact, and as Python's json.dumps would), checked
# before the regular expression: a C-level prefix test is several times faster per line.
_SEEN_HEADS = {
    f'{{"type":{sep}"{kind}",'.encode(): kind for kind in ("assistant", "user", "stream_event") for sep in ("", " ")
}
_SEEN_PREFIXES = tuple(_SEEN_HEADS)


def parse(line: bytes) -> dict[str, Any] | None:
    """The line as a JSON object, or None when it is not one (those are logged, not sent)."""
    if not line.startswith(b"{"):
        return None
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested about 1,000 levels deep
        return None
    return obj if isinstance(obj, dict) else None


def classify(line: bytes) -> tuple[str, dict[str, Any] | None] | None:
    """``(kind, parsed object or None)`` for a line to forward; None for a line that is not a
    JSON object. Only lines the server reads something from (init, result, ...) are parsed."""
    # endswith first: rstrip would copy a line that ends in whitespace (lines are megabytes).
    if line.endswith(b"}") or line.rstrip().endswith(b"}"):
        if line.startswith(_SEEN_PREFIXES):
            end = line.index(b",") + 1
            return _SEEN_HEADS[line[:end]], None
        head = _HEAD.match(line)
        if head is not None:
            return _KINDS[head.group(1)], None
    obj = parse(line)
    if obj is None:
        return None
    return kind(obj), obj


def kind(obj: dict[str, Any]) -> str:
    """``type`` or ``type/subtype`` for system lines: ``system/init``, ``assistant``, ``result``."""
    t = obj.get("type")
    t = t if isinstance(t, str) else "unknown"
    if t == "system" and isinstance(obj.get("subtype"), str):
        return f"system/{obj['subtype']}"
    return t


def session_id(obj: dict[str, Any]) -> str | None:
    sid = obj.get("session_id")
    return sid if isinstance(sid, str) and sid else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def result_summary(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``result`` line that the server records and returns for ``stream: false``."""
    usage = obj.get("usage")
    num_turns = obj.get("num_turns")
    duration = obj.get("duration_ms")
    return {
        "session_id": session_id(obj),
        "result": obj.get("result") if isinstance(obj.get("result"), str) else None,
        "subtype": obj.get("subtype") if isinstance(obj.get("subtype"), str) else None,
        "is_error": bool(obj.get("is_error", False)),
        "total_cost_usd": _number(obj.get("total_cost_usd")),
        "usage": usage if isinstance(usage, dict) else None,
        "num_turns": num_turns if isinstance(num_turns, int) and not isinstance(num_turns, bool) else None,
        "duration_ms": _number(duration),
    }
