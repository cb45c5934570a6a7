"""The web app's own SSE parser (it reads streams with fetch(), since EventSource cannot send
the API key), run in Node on the cases that break naive parsers."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import parse_sse

HERE = Path(__file__).resolve().parent
PARSER = HERE.parent / "claude_server" / "web" / "static" / "sse.js"

STREAM = (
    'id: t1:1\ndata: {"type":"system"}\n\n'
    ": ping\n\n"
    'event: error\nid: t1:2\ndata: {"type":"error","code":"cancelled"}\n\n'
)


def run(cases: list[list[str]], ids: list[str] | None = None) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (the project's set-up needs it: npm)")
    with tempfile.TemporaryDirectory() as tmp:
        module = Path(tmp) / "sse.mjs"
        shutil.copyfile(PARSER, module)
        done = subprocess.run(
            [node, str(HERE / "webapp_sse.mjs"), str(module)],
            input=json.dumps({"cases": cases, "ids": ids or []}),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_events_ids_names_and_comments() -> None:
    (events,) = run([[STREAM]])["events"]
    assert events == [
        {"event": "message", "data": '{"type":"system"}', "id": "t1:1"},
        {"event": "error", "data": '{"type":"error","code":"cancelled"}', "id": "t1:2"},
    ]


def test_every_split_of_the_stream_gives_the_same_events() -> None:
    whole = run([[STREAM]])["events"][0]
    cases = [[STREAM[:i], STREAM[i:]] for i in range(1, len(STREAM))]
    cases.append(list(STREAM))  # one character at a time
    for got in run(cases)["events"]:
        assert got == whole


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_any_line_ending_and_a_crlf_split_across_chunks(newline: str) -> None:
    text = STREAM.replace("\n", newline)
    whole = run([[text]])["events"][0]
    assert [e["id"] for e in whole] == ["t1:1", "t1:2"]
    split = [[text[:i], text[i:]] for i in range(1, len(text))]
    for got in run(split)["events"]:
        assert got == whole


def test_multi_line_data_an_unterminated_event_and_field_quirks() -> None:
    (events,) = run([["data: one\ndata:two\ndata\n\nid\ndata: x\n\nretry: 5\n\nid: bad\0id\ndata: y\n\ndata: tail"]])[
        "events"
    ]
    assert events == [
        {"event": "message", "data": "one\ntwo\n", "id": ""},
        {"event": "message", "data": "x", "id": ""},
        {"event": "message", "data": "y", "id": ""},
    ]


def test_a_megabyte_line_and_text_beyond_ascii_arrive_whole() -> None:
    line = json.dumps({"type": "assistant", "text": "é€😀" * 100_000})
    text = f"id: t:3\ndata: {line}\n\n"
    chunks = [text[i : i + 65536] for i in range(0, len(text), 65536)]
    (events,) = run([chunks])["events"]
    assert events == [{"event": "message", "data": line, "id": "t:3"}]
    assert [e.data for e in parse_sse(text)] == [line]


def test_seq_of_an_event_id() -> None:
    assert run([], ["t1:12", "12", "abc", "", "a:b:7"])["seqs"] == [12, 12, None, None, 7]
