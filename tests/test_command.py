"""argv and environment building: pure functions, tested exhaustively."""

from __future__ import annotations

import pytest

from claude_server.claude.command import PROCESS_MARKER, TurnOptions, build_argv, build_env

BASE = ["claude", "-p", "--verbose", "--input-format", "stream-json", "--output-format", "stream-json"]


def test_minimal_argv_never_contains_the_prompt() -> None:
    argv = build_argv("claude", TurnOptions(prompt="--help me"))
    assert argv == BASE
    assert "--help me" not in argv


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (TurnOptions(prompt="p", session_id="abc"), ["--resume=abc"]),
        (TurnOptions(prompt="p", session_id="abc", fork_session=True), ["--resume=abc", "--fork-session"]),
        # fork without a session has nothing to fork: the flag is left out
        (TurnOptions(prompt="p", fork_session=True), []),
        (TurnOptions(prompt="p", skip_permissions=True), ["--dangerously-skip-permissions"]),
        (TurnOptions(prompt="p", permission_mode="acceptEdits"), ["--permission-mode=acceptEdits"]),
        (TurnOptions(prompt="p", model="-sonnet"), ["--model=-sonnet"]),
        (TurnOptions(prompt="p", max_turns=3), ["--max-turns=3"]),
        (TurnOptions(prompt="p", max_budget_usd=0.5), ["--max-budget-usd=0.5"]),
        (TurnOptions(prompt="p", system_prompt="be brief"), ["--system-prompt=be brief"]),
        (TurnOptions(prompt="p", append_system_prompt="-x"), ["--append-system-prompt=-x"]),
        (TurnOptions(prompt="p", allowed_tools=("Bash(git log:*)", "Edit")), ["--allowedTools=Bash(git log:*),Edit"]),
        (TurnOptions(prompt="p", disallowed_tools=("WebFetch",)), ["--disallowedTools=WebFetch"]),
        (TurnOptions(prompt="p", include_partial_messages=True), ["--include-partial-messages"]),
    ],
)
def test_each_option_maps_to_its_flag(options: TurnOptions, expected: list[str]) -> None:
    assert build_argv("claude", options) == BASE + expected


def test_all_options_together() -> None:
    opts = TurnOptions(
        prompt="p",
        session_id="s",
        fork_session=True,
        skip_permissions=True,
        permission_mode="plan",
        model="opus",
        max_turns=2,
        max_budget_usd=1.0,
        allowed_tools=("Read",),
        disallowed_tools=("Bash",),
        include_partial_messages=True,
    )
    argv = build_argv("/opt/claude", opts)
    assert argv[0] == "/opt/claude"
    assert argv[len(BASE) :] == [
        "--resume=s",
        "--fork-session",
        "--dangerously-skip-permissions",
        "--permission-mode=plan",
        "--model=opus",
        "--max-turns=2",
        "--max-budget-usd=1.0",
        "--allowedTools=Read",
        "--disallowedTools=Bash",
        "--include-partial-messages",
    ]


def test_summary_leaves_out_prompt_and_defaults() -> None:
    opts = TurnOptions(prompt="secret", model="opus", allowed_tools=("Read",))
    assert opts.summary() == {"model": "opus", "allowed_tools": ("Read",)}


def test_env_is_an_allow_list_plus_the_marker() -> None:
    environ = {
        "PATH": "/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "ANTHROPIC_API_KEY": "sk-ant",
        "ANTHROPIC_BASE_URL": "http://x",
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "CLAUDE_CONFIG_DIR": "/cfg",
        "IS_SANDBOX": "1",
        "HTTPS_PROXY": "http://proxy",
        "NODE_EXTRA_CA_CERTS": "/ca.pem",
        # never passed:
        "CLAUDECODE": "1",
        "CLAUDE_SERVER_API_KEYS": "server-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "DATABASE_URL": "postgres://secret",
    }
    env = build_env(environ, "turn-1")
    assert env[PROCESS_MARKER] == "turn-1"
    assert set(env) == {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "CLAUDE_CODE_USE_BEDROCK",
        "CLAUDE_CONFIG_DIR",
        "IS_SANDBOX",
        "HTTPS_PROXY",
        "NODE_EXTRA_CA_CERTS",
        PROCESS_MARKER,
    }


def test_env_extra_names_and_prefixes_but_never_the_denied() -> None:
    environ = {"AWS_REGION": "eu", "AWS_PROFILE": "p", "FOO": "1", "CLAUDECODE": "1", "CLAUDE_SERVER_X": "s"}
    env = build_env(environ, "t", extra_allowed=("AWS_*", "FOO", "CLAUDECODE", "CLAUDE_SERVER_*"))
    assert {k for k in env if k != PROCESS_MARKER} == {"AWS_REGION", "AWS_PROFILE", "FOO"}


def test_env_marker_cannot_be_overridden_by_the_environment() -> None:
    env = build_env({PROCESS_MARKER: "other", "PATH": "/bin"}, "mine")
    assert env[PROCESS_MARKER] == "mine"
