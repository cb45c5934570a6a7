"""The command line as a new user meets it: usage errors in one line, a --help in groups, a
busy port in one line, "listening" only once it is, and the data out of the start directory."""

from __future__ import annotations

import errno
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_server import cli, config
from tests.conftest import FAKE_CLI, base_environ

LISTENING_RE = re.compile(r"claude-server \S+ listening on http://127\.0\.0\.1:(\d+)$", re.M)
START_TIMEOUT_S = 30.0


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
    assert "--db FILE|URL" in text and "default: <data dir>/sessions.db" in text
    assert "--health-auth [BOOL]" in text


def test_bind_refusals_are_one_sentence() -> None:
    refuse = cli.bind_refusal
    assert refuse(OSError(errno.EADDRINUSE, "in use"), "127.0.0.1", 3000) == (
        "port 3000 is in use; pick another with --port"
    )
    assert refuse(OSError(errno.EACCES, "denied"), "127.0.0.1", 80) == (
        "no permission to listen on port 80 (ports below 1024 need root); pick another with --port"
    )
    assert refuse(OSError(errno.EADDRNOTAVAIL, "na"), "10.9.9.9", 3000) == (
        "cannot listen on 10.9.9.9: it is not an address of this machine; check --host"
    )


def test_port_zero_gives_every_address_the_same_port() -> None:
    sockets = cli.bind_sockets("localhost", 0)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1 and ports != {0}
        assert cli.socket_url(sockets[0]).startswith("http://")
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The servers a test starts; any still running at its end is killed, pass or fail."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_server(servers: list[subprocess.Popen[bytes]], cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m claude_server`` with the fake CLI, started in ``cwd`` with ``cwd/home`` as
    HOME and no data setting: where a new user would start it. Output goes to ``cwd/log``."""
    (cwd / "home").mkdir(exist_ok=True)
    env = {**base_environ(cwd / "home"), "CLAUDE_SERVER_CLAUDE_BIN": str(FAKE_CLI)}
    with (cwd / "log").open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "claude_server", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    servers.append(proc)
    return proc


def test_a_busy_port_is_one_line(tmp_path: Path, servers: list[subprocess.Popen[bytes]]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_server(servers, tmp_path, "--port", str(port))
        assert proc.wait(START_TIMEOUT_S) == 1
    lines = (tmp_path / "log").read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(f"ERROR claude_server: port {port} is in use; pick another with --port")


def test_an_unknown_host_is_one_line(tmp_path: Path, servers: list[subprocess.Popen[bytes]]) -> None:
    proc = run_server(servers, tmp_path, "--host", "no-such-host.invalid", "--insecure-no-auth")
    assert proc.wait(START_TIMEOUT_S) == 1
    lines = (tmp_path / "log").read_text().splitlines()
    assert len(lines) == 1, lines
    assert "cannot listen on 'no-such-host.invalid'" in lines[0] and lines[0].endswith("check --host")


def test_listening_is_logged_with_the_real_port_once_started_and_the_data_is_not_in_the_start_directory(
    tmp_path: Path, servers: list[subprocess.Popen[bytes]]
) -> None:
    proc = run_server(servers, tmp_path, "--port", "0")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (found := LISTENING_RE.search((tmp_path / "log").read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()
            time.sleep(0.05)
        port = int(found.group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        proc.terminate()
        proc.wait(START_TIMEOUT_S)
    log = (tmp_path / "log").read_text()
    data = tmp_path / "home" / ".local" / "share" / "claude-server"
    assert f"database {data / 'sessions.db'}, workspaces in {data / 'workspace'}" in log
    # After the app's start-up (the CLI probe, the migrations), not before.
    assert log.index("Claude Code CLI") < log.index("listening on")
    assert log.count("listening on") == 1
    assert (data / "sessions.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "log"]
