"""The fake CLI's interactive mode (``--input-format stream-json`` and the control protocol),
driven directly: the server's fast tests rely on it behaving as documented in its docstring."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FAKE_CLI = Path(__file__).resolve().parent / "fake_claude.py"
STREAM_ARGV = ["-p", "--verbose", "--input-format", "stream-json", "--output-format", "stream-json"]
PROMPT_TOOL = "--permission-prompt-tool=stdio"


class Fake:
    """One fake CLI process: write JSON lines to it, wait for the lines it prints."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        self.cwd = tmp_path / "work"
        self.cwd.mkdir(exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "ANTHROPIC_API_KEY": "x"}
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE_CLI), *STREAM_ARGV, *extra],
            cwd=self.cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def user(self, text: str, **extra: Any) -> None:
        message = {"role": "user", "content": text}
        self.send({"type": "user", "message": message, "parent_tool_use_id": None, "session_id": "", **extra})

    def control(self, rid: str, subtype: str, **fields: Any) -> None:
        self.send({"type": "control_request", "request_id": rid, "request": {"subtype": subtype, **fields}})

    def answer(self, rid: str, response: dict[str, Any]) -> None:
        body = {"subtype": "success", "request_id": rid, "response": response}
        self.send({"type": "control_response", "response": body})

    def next(self, timeout: float = 5) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        assert line is not None, "the fake exited"
        self.seen.append(line)
        return line

    def until(self, match: Callable[[dict[str, Any]], bool], timeout: float = 5) -> list[dict[str, Any]]:
        """The lines up to and including the first that matches."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            got.append(self.next(max(0.01, deadline - time.monotonic())))
            if match(got[-1]):
                return got

    def turn(self, timeout: float = 5) -> list[dict[str, Any]]:
        return self.until(lambda line: line["type"] == "result", timeout)

    def close(self, timeout: float = 5) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout)


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Callable[..., Fake]]:
    started: list[Fake] = []

    def start(*extra: str, name: str = "a") -> Fake:
        (tmp_path / name).mkdir(exist_ok=True)
        fake = Fake(tmp_path / name, *extra)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        if fake.proc.poll() is None:
            fake.proc.kill()
        fake.proc.wait()
        for stream in (fake.proc.stdin, fake.proc.stdout, fake.proc.stderr):
            if stream is not None:
                stream.close()


def of_type(lines: list[dict[str, Any]], kind: str, subtype: str | None = None) -> list[dict[str, Any]]:
    return [x for x in lines if x["type"] == kind and (subtype is None or x.get("subtype") == subtype)]


def texts(lines: list[dict[str, Any]]) -> list[str]:
    return [
        block["text"]
        for line in of_type(lines, "assistant")
        for block in line["message"]["content"]
        if block["type"] == "text"
    ]


def tool_results(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        block
        for line in of_type(lines, "user")
        for block in line["message"]["content"]
        if block["type"] == "tool_result"
    ]


def test_three_turns_in_one_process_with_running_costs(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.control("req_1", "initialize", hooks=None)
    assert fake.next() == {
        "type": "control_response",
        "response": {
            "subtype": "success",
            "request_id": "req_1",
            "response": {"commands": [], "models": [], "account": {}},
        },
    }
    turns = []
    for n in (1, 2, 3):
        fake.user(f"turn {n}")
        turns.append(fake.turn())
    inits = [t[0] for t in turns]
    assert all(i["subtype"] == "init" for i in inits)
    assert len({i["fake_pid"] for i in inits}) == 1 and inits[0]["fake_pid"] == fake.proc.pid
    assert [i["fake_turn_in_process"] for i in inits] == [1, 2, 3]
    assert len({i["session_id"] for i in inits}) == 1
    results = [t[-1] for t in turns]
    assert [r["result"] for r in results] == ["fake answer 1: turn 1", "fake answer 2: turn 2", "fake answer 3: turn 3"]
    assert [r["total_cost_usd"] for r in results] == [0.001, 0.002, 0.003]
    assert all(
        r["model_usage_since_last_result"] == {"fake-model": {"inputTokens": 10, "costUSD": 0.001}} for r in results
    )
    assert [r["modelUsage"]["fake-model"]["inputTokens"] for r in results] == [10, 20, 30]
    assert all(r["terminal_reason"] == "completed" and r["subtype"] == "success" for r in results)
    started = time.monotonic()
    assert fake.close() == 0
    assert time.monotonic() - started < 1

    # A cold resume sees all three turns.
    sid = inits[0]["session_id"]
    home = fake.cwd.parent / "home"
    cold = subprocess.run(
        [sys.executable, str(FAKE_CLI), "-p", "--verbose", "--output-format", "stream-json", "--resume", sid],
        input=b"turn 4",
        cwd=fake.cwd,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_API_KEY": "x"},
        capture_output=True,
        check=True,
    )
    result = json.loads(cold.stdout.splitlines()[-1])
    assert result["result"] == "fake answer 4: turn 4" and result["total_cost_usd"] == 0.004


def test_resumed_warm_process_continues_the_total(fakes: Callable[..., Fake]) -> None:
    first = fakes()
    first.user("one")
    sid = first.turn()[0]["session_id"]
    assert first.close() == 0
    second = fakes("--resume", sid)
    second.user("two")
    second.turn()
    second.user("three")
    result = second.turn()[-1]
    assert result["session_id"] == sid and result["total_cost_usd"] == 0.003
    assert result["result"] == "fake answer 3: three"


def test_interrupt_cuts_a_sleep_short_and_keeps_the_process(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.user("wait @sleep=5")
    init = fake.next()
    started = time.monotonic()
    fake.control("req_2", "interrupt")
    lines = fake.turn()
    assert time.monotonic() - started < 0.5
    assert lines[0] == {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": "req_2", "response": {"still_queued": []}},
    }
    assert lines[1]["type"] == "user"
    assert lines[1]["message"]["content"] == [{"type": "text", "text": "[Request interrupted by user]"}]
    result = lines[-1]
    assert result["subtype"] == "error_during_execution" and result["is_error"] is True
    assert result["terminal_reason"] == "aborted_streaming" and result["stop_reason"] is None
    assert result["total_cost_usd"] == 0.001
    # Idle: just the answer. The next turn runs in the same process and counts the interrupted one.
    fake.control("req_3", "interrupt")
    assert fake.next()["response"]["request_id"] == "req_3"
    fake.user("again")
    lines = fake.turn()
    assert lines[0]["fake_pid"] == init["fake_pid"] and lines[0]["fake_turn_in_process"] == 2
    assert lines[-1]["subtype"] == "success" and lines[-1]["total_cost_usd"] == 0.002
    assert fake.close() == 0


def test_interrupt_cuts_slow_lines_short(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.user("@slow=2 @lines=3")
    fake.next()
    started = time.monotonic()
    fake.control("r", "interrupt")
    assert fake.turn()[-1]["terminal_reason"] == "aborted_streaming"
    assert time.monotonic() - started < 0.5


def test_priority_now_aborts_and_runs_a_queued_message_waits(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.user("first @sleep=5")
    fake.next()
    fake.user("queued")
    fake.user("urgent", priority="now")
    started = time.monotonic()
    aborted = fake.turn()
    assert aborted[-1]["terminal_reason"] == "aborted_streaming"
    assert time.monotonic() - started < 0.5
    urgent = fake.turn()
    queued = fake.turn()
    assert urgent[0]["subtype"] == "init" and urgent[-1]["result"] == "fake answer 2: urgent"
    assert queued[0]["subtype"] == "init" and queued[-1]["result"] == "fake answer 3: queued"
    assert [t[0]["fake_turn_in_process"] for t in (urgent, queued)] == [2, 3]


def test_queued_message_runs_as_its_own_turn_and_eof_finishes_the_queue(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.user("first @sleep=0.2")
    fake.user("second", priority="next")
    assert fake.proc.stdin is not None
    fake.proc.stdin.close()
    first, second = fake.turn(), fake.turn()
    assert first[-1]["result"] == "fake answer 1: first @sleep=0.2" and first[-1]["subtype"] == "success"
    assert second[0]["subtype"] == "init" and second[-1]["result"] == "fake answer 2: second"
    assert fake.proc.wait(2) == 0


def test_set_model_and_permission_mode_show_in_later_inits(fakes: Callable[..., Fake]) -> None:
    fake = fakes(PROMPT_TOOL)
    fake.control("m", "set_model", model="other-model")
    assert fake.next()["response"] == {"subtype": "success", "request_id": "m", "response": {}}
    fake.control("p", "set_permission_mode", mode="bypassPermissions")
    assert fake.next()["response"] == {"subtype": "success", "request_id": "p", "response": {}}
    fake.user("go @permission=Bash")
    lines = fake.turn()
    assert lines[0]["model"] == "other-model" and lines[0]["permissionMode"] == "bypassPermissions"
    # bypassPermissions: no request.
    assert not of_type(lines, "control_request")
    assert tool_results(lines)[0]["content"] == "ran: echo fake > f.txt"


def test_unknown_control_subtype_is_an_error(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.control("x", "rewind_files")
    assert fake.next() == {
        "type": "control_response",
        "response": {
            "subtype": "error",
            "request_id": "x",
            "error": "Unsupported control request subtype: rewind_files",
        },
    }
    fake.user("still alive")
    assert fake.turn()[-1]["subtype"] == "success"


def test_non_json_line_exits_1(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    assert fake.proc.stdin is not None
    fake.proc.stdin.write(b"hello\n")
    fake.proc.stdin.flush()
    assert fake.proc.wait(2) == 1
    assert fake.proc.stderr is not None and b"Error parsing" in fake.proc.stderr.read()


def permission_request(lines: list[dict[str, Any]]) -> dict[str, Any]:
    assert lines[-1]["type"] == "control_request"
    return lines[-1]


def is_request(line: dict[str, Any]) -> bool:
    return line["type"] == "control_request"


def test_permission_allow_runs_the_updated_input(fakes: Callable[..., Fake]) -> None:
    fake = fakes(PROMPT_TOOL)
    fake.user("do it @permission=Bash")
    lines = fake.until(is_request)
    frame = permission_request(lines)
    tool_use = lines[-2]["message"]["content"][0]
    request = frame["request"]
    cwd = str(fake.cwd)
    assert request == {
        "subtype": "can_use_tool",
        "tool_name": "Bash",
        "display_name": "Bash",
        "input": {"command": "echo fake > f.txt", "description": "write a file"},
        "description": "write a file",
        "permission_suggestions": [
            {
                "type": "addRules",
                "rules": [{"toolName": "Bash", "ruleContent": "echo fake *"}],
                "behavior": "allow",
                "destination": "localSettings",
            },
            {"type": "addDirectories", "directories": [cwd], "destination": "session"},
        ],
        "blocked_path": f"{cwd}/f.txt",
        "tool_use_id": tool_use["id"],
    }
    assert tool_use["type"] == "tool_use" and tool_use["name"] == "Bash" and tool_use["id"].startswith("toolu_")
    fake.answer("not-ours", {"behavior": "deny", "message": "ignored"})
    fake.answer(frame["request_id"], {"behavior": "allow", "updatedInput": {"command": "echo other"}})
    lines = fake.turn()
    assert tool_results(lines) == [
        {"type": "tool_result", "tool_use_id": tool_use["id"], "content": "ran: echo other", "is_error": False}
    ]
    assert lines[-1]["subtype"] == "success" and lines[-1]["permission_denials"] == []
    assert texts(lines) == ["fake answer 1: do it @permission=Bash"]
    # Not remembered: the next use asks again.
    fake.user("again @permission=Bash")
    assert permission_request(fake.until(is_request))["request"]["tool_name"] == "Bash"


def test_permission_deny_goes_on(fakes: Callable[..., Fake]) -> None:
    fake = fakes(PROMPT_TOOL)
    fake.user("do it @permission=Bash")
    frame = permission_request(fake.until(is_request))
    fake.answer(frame["request_id"], {"behavior": "deny", "message": "no way", "interrupt": False})
    lines = fake.turn()
    result = tool_results(lines)[0]
    assert result["is_error"] is True and result["content"] == "no way"
    assert lines[-1]["subtype"] == "success" and "denied: no way" in lines[-1]["result"]
    assert "denied: no way" in texts(lines)[-1]
    assert lines[-1]["permission_denials"][0]["tool_use_id"] == frame["request"]["tool_use_id"]


def test_permission_deny_with_interrupt_ends_the_turn(fakes: Callable[..., Fake]) -> None:
    fake = fakes(PROMPT_TOOL)
    fake.user("do it @permission=Bash")
    frame = permission_request(fake.until(is_request))
    fake.answer(frame["request_id"], {"behavior": "deny", "message": "stop", "interrupt": True})
    lines = fake.turn()
    result = lines[-1]
    assert result["subtype"] == "error_during_execution" and result["is_error"] is True
    assert result["terminal_reason"] == "aborted_tools"
    assert result["permission_denials"] == [
        {
            "tool_name": "Bash",
            "tool_use_id": frame["request"]["tool_use_id"],
            "tool_input": {"command": "echo fake > f.txt", "description": "write a file"},
        }
    ]
    assert not texts(lines)
    fake.user("next")
    assert fake.turn()[-1]["subtype"] == "success"


def test_interrupt_cancels_a_pending_permission_request(fakes: Callable[..., Fake]) -> None:
    fake = fakes(PROMPT_TOOL)
    fake.user("do it @permission=Bash")
    frame = permission_request(fake.until(is_request))
    fake.control("again", "initialize")
    response = fake.next()["response"]["response"]
    assert response["pending_permission_requests"] == [frame] and response["session_state"] == "requires_action"
    started = time.monotonic()
    fake.control("i", "interrupt")
    lines = fake.turn()
    assert time.monotonic() - started < 0.5
    assert {"type": "control_cancel_request", "request_id": frame["request_id"]} in lines
    assert lines[-1]["terminal_reason"] == "aborted_streaming"
    fake.answer(frame["request_id"], {"behavior": "allow", "updatedInput": {}})  # too late: ignored
    fake.user("next")
    assert fake.turn()[-1]["subtype"] == "success"


def test_remembered_permission_skips_later_asks_in_the_process(fakes: Callable[..., Fake]) -> None:
    fake = fakes(PROMPT_TOOL)
    fake.user("two asks @permission=Bash,Write")
    frame = permission_request(fake.until(is_request))
    rule = {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "echo fake *"}]}
    always = {**rule, "behavior": "allow", "destination": "session"}
    fake.answer(
        frame["request_id"],
        {"behavior": "allow", "updatedInput": frame["request"]["input"], "updatedPermissions": [always]},
    )
    second = permission_request(fake.until(is_request))
    assert second["request"]["tool_name"] == "Write"
    fake.answer(second["request_id"], {"behavior": "allow", "updatedInput": second["request"]["input"]})
    lines = fake.turn()
    assert [r["content"] for r in tool_results(lines)] == ["ran: echo fake > f.txt"]
    fake.user("again @permission=Bash @permission=Bash")
    lines = fake.turn()
    assert not of_type(lines, "control_request")
    assert [r["content"] for r in tool_results(lines)] == ["ran: echo fake > f.txt"] * 2
    # Write was allowed once, not remembered.
    fake.user("write @permission=Write")
    assert permission_request(fake.until(is_request))["request"]["tool_name"] == "Write"
    assert fake.proc.stdin is not None
    fake.proc.stdin.close()
    lines = fake.turn()
    assert tool_results(lines)[0]["is_error"] is True
    assert fake.proc.wait(2) == 0

    # Not persisted: a new process asks again.
    other = fakes(PROMPT_TOOL, "--resume", lines[-1]["session_id"])
    other.user("@permission=Bash")
    assert permission_request(other.until(is_request))["request"]["tool_name"] == "Bash"


def test_ask_user_question(fakes: Callable[..., Fake]) -> None:
    # bypassPermissions runs Bash without asking, and still asks the question.
    fake = fakes(PROMPT_TOOL, "--permission-mode=bypassPermissions")
    fake.user("@permission=Bash @ask=Shall_we_go?")
    lines = fake.until(is_request)
    assert [r["content"] for r in tool_results(lines)] == ["ran: echo fake > f.txt"]
    frame = permission_request(lines)
    request = frame["request"]
    assert request["tool_name"] == "AskUserQuestion"
    question = request["input"]["questions"][0]
    assert question["question"] == "Shall we go?" and [o["label"] for o in question["options"]] == ["yes", "no"]
    answers = {**request["input"], "answers": {"Shall we go?": "yes"}}
    fake.answer(frame["request_id"], {"behavior": "allow", "updatedInput": answers})
    lines = fake.turn()
    assert tool_results(lines)[-1]["content"] == 'User has answered your questions: "Shall we go?"="yes".'
    assert texts(lines)[0] == "answered: yes"
    assert texts(lines)[-1] == "fake answer 1: @permission=Bash @ask=Shall_we_go?"
    fake.user("@ask=Again?")
    frame = permission_request(fake.until(is_request))
    fake.answer(frame["request_id"], {"behavior": "deny", "message": "not now"})
    result = tool_results(fake.turn())[0]
    assert result["is_error"] is True and result["content"] == "not now"


def test_without_prompt_tool_permissions_are_denied(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.user("@permission=Bash @ask=Why?")
    lines = fake.turn()
    assert not of_type(lines, "control_request")
    denied = of_type(lines, "system", "permission_denied")
    assert [d["tool_name"] for d in denied] == ["Bash", "AskUserQuestion"]
    results = tool_results(lines)
    assert results[0]["is_error"] is True
    assert results[0]["content"] == "Claude requested permissions to use Bash, but you haven't granted it yet."
    assert [d["tool_name"] for d in lines[-1]["permission_denials"]] == ["Bash", "AskUserQuestion"]
    assert lines[-1]["subtype"] == "success"


def test_die_after_result(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.user("bye @die-after-result")
    assert fake.turn()[-1]["subtype"] == "success"
    assert fake.proc.wait(2) == 3


def test_exit_mid_turn(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.user("@exit=7")
    assert fake.next()["subtype"] == "init"
    assert fake.proc.wait(2) == 7


def test_hang_after_result_ignores_eof(fakes: Callable[..., Fake]) -> None:
    fake = fakes()
    fake.user("@hang-after-result")
    fake.turn()
    assert fake.proc.stdin is not None
    fake.proc.stdin.close()
    with pytest.raises(subprocess.TimeoutExpired):
        fake.proc.wait(0.3)


def test_print_mode_init_has_pid_and_turn(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ANTHROPIC_API_KEY": "x"}
    argv = [sys.executable, str(FAKE_CLI), "-p", "--verbose", "--output-format", "stream-json"]
    done = subprocess.run(argv, input=b"hi", env=env, capture_output=True, check=True, cwd=tmp_path)
    init = json.loads(done.stdout.splitlines()[0])
    assert init["fake_turn_in_process"] == 1 and init["fake_pid"] > 0
