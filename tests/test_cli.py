"""The command line as a new user meets it: usage errors in one line, a --help in groups."""

from __future__ import annotations

import re

import pytest

from claude_server import cli, config


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """What ``claude-server <argv>`` prints on stderr before it exits with status 2."""
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    usage, error, *rest = err.splitlines()
    assert usage.startswith("usage: claude-server") and rest == []
    return error.removeprefix("claude-server: error: ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "abc"], "--port must be a number between 1 and 65535, got 'abc'"),
        (["--port=70000"], "--port must be a number between 1 and 65535, got '70000'"),
        (["serve", "--max-concurrent", "0"], "--max-concurrent must be a whole number greater than 0, got '0'"),
        (["--queue-timeout", "soon"], "--queue-timeout must be a number of seconds greater than 0, got 'soon'"),
        (
            ["--max-upload-size", "big"],
            "--max-upload-size must be a size in bytes greater than 0, such as 16M (K, M and G suffixes allowed), "
            "got 'big'",
        ),
        (["--health-auth", "maybe"], "--health-auth must be true or false (or 1/0, yes/no, on/off), got 'maybe'"),
        (
            ["--insecure-no-auth=2", "serve"],
            "--insecure-no-auth must be true or false (or 1/0, yes/no, on/off), got '2'",
        ),
        (["--log-level", "loud"], "--log-level must be DEBUG, INFO, WARNING or ERROR, got 'loud'"),
        (
            ["--compat-system-prompt-mode", "merge"],
            "--compat-system-prompt-mode must be append (to Claude Code's system prompt) or replace (it), got 'merge'",
        ),
    ],
)
def test_a_bad_flag_is_one_line_that_says_what_it_must_be(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert usage_error(capsys, argv) == message


def test_a_bad_variable_is_named_too(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_SERVER_PORT", "http")
    assert usage_error(capsys, ["serve"]) == "CLAUDE_SERVER_PORT must be a number between 1 and 65535, got 'http'"
    # The flag wins over the variable: the message names where the bad value came from.
    monkeypatch.delenv("CLAUDE_SERVER_PORT")
    monkeypatch.setenv("CLAUDE_SERVER_MAX_QUEUE", "many")
    assert usage_error(capsys, ["--max-queue", "x"]) == "--max-queue must be a whole number, 0 or more, got 'x'"


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["purge", "--help"]])
def test_help_groups_the_settings_and_names_their_variables(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no variable's name broken over two lines
    with pytest.raises(SystemExit):
        cli.main(argv)
    text = capsys.readouterr().out
    titles = re.findall(r"^(\S[^:\n]*):$", text, re.M)
    assert [t for t in titles if t not in ("options", "positional arguments")] == [title for title, _ in config.GROUPS]
    assert re.search(r"default:?\s+\)", text) is None
    for opt in config.OPTIONS:
        # A flag's entry runs until the next flag or group title.
        entry = re.search(rf"^  {re.escape(opt.flag)} (.*?)(?=^  -|^\S|\Z)", text, re.M | re.S)
        assert entry is not None and f"env {opt.env}" in " ".join(entry.group(1).split()), opt.flag
    assert "--health-auth [BOOL]" in text
