"""Reading CLI lines, against the recorded examples of the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from claude_server.claude import events

RECORDED = Path(__file__).resolve().parent / "data" / "stream-json"


def test_parse_rejects_what_is_not_a_json_object() -> None:
    assert events.parse(b"not json") is None
    assert events.parse(b"[1, 2]") is None
    assert events.parse(b"{broken") is None
    assert events.parse(b"") is None
    assert events.parse(b'{"type": "x"}') == {"type": "x"}
    assert events.parse(b'{"type": "result", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}") is None


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        ({"type": "system", "subtype": "init"}, "system/init"),
        ({"type": "system", "subtype": "api_retry"}, "system/api_retry"),
        ({"type": "system"}, "system"),
        ({"type": "assistant"}, "assistant"),
        ({"subtype": "success", "type": "result"}, "result"),
        ({"type": 5}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_kind(obj: dict[str, object], kind: str) -> None:
    assert events.kind(obj) == kind


def test_result_summary_reads_defensively() -> None:
    summary = events.result_summary({"type": "result", "is_error": True, "num_turns": True, "total_cost_usd": "1"})
    assert summary == {
        "session_id": None,
        "result": None,
        "subtype": None,
        "is_error": True,
        "total_cost_usd": None,
        "usage": None,
        "num_turns": None,
        "duration_ms": None,
    }


@pytest.mark.parametrize("name", sorted(p.name for p in RECORDED.glob("*.jsonl")))
def test_recorded_streams(name: str) -> None:
    lines = (RECORDED / name).read_bytes().splitlines()
    objs = [events.parse(line) for line in lines]
    assert all(obj is not None for obj in objs)
    kinds = [events.kind(obj) for obj in objs if obj is not None]
    assert kinds[0] == "system/init"
    assert kinds[-1] == "result"  # its "type" key comes last in 2.1.330
    init, result = objs[0], objs[-1]
    assert init is not None and result is not None
    assert events.session_id(init) == events.session_id(result)
    summary = events.result_summary(result)
    # 13-max-turns and 14-max-budget end in an error subtype, and then is_error is true
    assert summary["subtype"] in ("success", "error_max_turns", "error_max_budget_usd")
    assert summary["subtype"] == "success" or summary["is_error"]
    assert isinstance(summary["total_cost_usd"], float)
    assert isinstance(summary["num_turns"], int)


def test_frequent_kinds_are_recognised_by_their_head_in_both_spellings() -> None:
    for head in (b'{"type":"assistant",', b'{"type": "assistant",', b'{ "type" : "assistant" ,'):
        assert events.classify(head + b'"message": {}}') == ("assistant", None)
    assert events.classify(b'{"type":"stream_event","event":{}}') == ("stream_event", None)
    assert events.classify(b'{"type":"user","message":{}}  ') == ("user", None)
    # Not a whole object: parsed, and refused.
    assert events.classify(b'{"type":"assistant","message":') is None
